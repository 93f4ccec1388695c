//! E-mail reservation: one aggregate per normalised address, so that a unique e-mail is enforced by
//! the event log's optimistic concurrency. The second signup for an address loses the race.

mod command;
mod error;
mod event;

pub use command::EmailReservationCommand;
pub use error::EmailReservationError;
pub use event::EmailReservationEvent;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::{DisplayName, Email, TenantId, TenantName, UserId};

/// The signup an address is reserved for: everything needed to finish it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signup {
    pub email: Email,
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub display_name: DisplayName,
    pub tenant_name: TenantName,
}

/// Reservation state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EmailReservation {
    signup: Option<Signup>,
}

impl Aggregate for EmailReservation {
    const TYPE: &'static str = "email_reservation";
    type Command = EmailReservationCommand;
    type Event = EmailReservationEvent;
    type Error = EmailReservationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: EmailReservationCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), EmailReservationError> {
        match command {
            EmailReservationCommand::Reserve(signup) => {
                if self.signup.is_some() {
                    return Err(EmailReservationError::Taken);
                }
                sink.write(EmailReservationEvent::EmailReserved(signup), self)
                    .await;
                Ok(())
            }
            EmailReservationCommand::Release { user_id } => {
                if self.signup.as_ref().is_some_and(|s| s.user_id == user_id) {
                    sink.write(EmailReservationEvent::EmailReleased { user_id }, self)
                        .await;
                }
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: EmailReservationEvent) {
        match event {
            EmailReservationEvent::EmailReserved(signup) => self.signup = Some(signup),
            EmailReservationEvent::EmailReleased { .. } => self.signup = None,
        }
    }
}

impl EmailReservation {
    /// The signup holding the address, if any.
    pub fn signup(&self) -> Option<&Signup> {
        self.signup.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn signup() -> Signup {
        Signup {
            email: Email::parse("ann@example.com").unwrap(),
            user_id: UserId::generate(),
            tenant_id: TenantId::generate(),
            display_name: DisplayName::parse("Ann").unwrap(),
            tenant_name: TenantName::parse("Acme").unwrap(),
        }
    }

    #[test]
    fn a_free_address_is_reserved() {
        let signup = signup();
        TestFramework::<EmailReservation>::with(())
            .given_no_previous_events()
            .when(EmailReservationCommand::Reserve(signup.clone()))
            .then_expect_events(vec![EmailReservationEvent::EmailReserved(signup)]);
    }

    #[test]
    fn the_state_knows_the_signup_holding_the_address() {
        let signup = signup();
        let mut reservation = EmailReservation::default();
        assert_eq!(reservation.signup(), None);
        reservation.apply(EmailReservationEvent::EmailReserved(signup.clone()));
        assert_eq!(reservation.signup(), Some(&signup));
    }

    #[test]
    fn a_released_address_is_reserved_again_by_a_new_signup() {
        let first = signup();
        let second = signup();
        TestFramework::<EmailReservation>::with(())
            .given(vec![
                EmailReservationEvent::EmailReserved(first.clone()),
                EmailReservationEvent::EmailReleased {
                    user_id: first.user_id,
                },
            ])
            .when(EmailReservationCommand::Reserve(second.clone()))
            .then_expect_events(vec![EmailReservationEvent::EmailReserved(second)]);
    }

    #[test]
    fn only_the_holder_releases_an_address() {
        let holder = signup();
        TestFramework::<EmailReservation>::with(())
            .given(vec![EmailReservationEvent::EmailReserved(holder.clone())])
            .when(EmailReservationCommand::Release {
                user_id: holder.user_id.clone(),
            })
            .then_expect_events(vec![EmailReservationEvent::EmailReleased {
                user_id: holder.user_id,
            }]);
        TestFramework::<EmailReservation>::with(())
            .given(vec![EmailReservationEvent::EmailReserved(signup())])
            .when(EmailReservationCommand::Release {
                user_id: signup().user_id,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn reserving_a_taken_address_is_refused() {
        TestFramework::<EmailReservation>::with(())
            .given(vec![EmailReservationEvent::EmailReserved(signup())])
            .when(EmailReservationCommand::Reserve(signup()))
            .then_expect_error(EmailReservationError::Taken);
    }
}
