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

use crate::{DisplayName, Email, InvitationId, TenantId, TenantName, UserId};

/// The signup an address is reserved for: everything needed to finish it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signup {
    pub email: Email,
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub display_name: DisplayName,
    pub tenant_name: TenantName,
}

/// A member joining a tenant by an invitation: everything needed to finish it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joining {
    pub email: Email,
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub display_name: DisplayName,
    pub invitation_id: InvitationId,
    /// When the invitee accepted: the acceptance is decided at this instant wherever it is
    /// completed, so a retry decides as the first attempt did.
    pub accepted_at: chrono::DateTime<chrono::Utc>,
}

/// Reservation state: at most one of a signup and a joining holds the address.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EmailReservation {
    signup: Option<Signup>,
    #[serde(default)]
    joining: Option<Joining>,
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
                if self.user_id().is_some() {
                    return Err(EmailReservationError::Taken);
                }
                sink.write(EmailReservationEvent::EmailReserved(signup), self)
                    .await;
                Ok(())
            }
            EmailReservationCommand::ReserveForMember(joining) => {
                if self.user_id().is_some() {
                    return Err(EmailReservationError::Taken);
                }
                sink.write(EmailReservationEvent::MemberEmailReserved(joining), self)
                    .await;
                Ok(())
            }
            EmailReservationCommand::Release { user_id } => {
                if self.user_id() == Some(&user_id) {
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
            EmailReservationEvent::MemberEmailReserved(joining) => self.joining = Some(joining),
            EmailReservationEvent::EmailReleased { .. } => {
                self.signup = None;
                self.joining = None;
            }
        }
    }
}

impl EmailReservation {
    /// The signup holding the address, if any.
    pub fn signup(&self) -> Option<&Signup> {
        self.signup.as_ref()
    }

    /// The member joining with the address, if any.
    pub fn joining(&self) -> Option<&Joining> {
        self.joining.as_ref()
    }

    /// The user holding the address, whether by signup or by invitation.
    pub fn user_id(&self) -> Option<&UserId> {
        match (&self.signup, &self.joining) {
            (Some(signup), _) => Some(&signup.user_id),
            (None, Some(joining)) => Some(&joining.user_id),
            (None, None) => None,
        }
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

    fn joining() -> Joining {
        Joining {
            email: Email::parse("bob@example.com").unwrap(),
            user_id: UserId::generate(),
            tenant_id: TenantId::generate(),
            display_name: DisplayName::parse("Bob").unwrap(),
            invitation_id: InvitationId::generate(),
            accepted_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn an_invited_member_reserves_a_free_address_and_holds_it_like_a_signup() {
        let joining = joining();
        let reserved = EmailReservationEvent::MemberEmailReserved(joining.clone());
        TestFramework::<EmailReservation>::with(())
            .given_no_previous_events()
            .when(EmailReservationCommand::ReserveForMember(joining.clone()))
            .then_expect_events(vec![reserved.clone()]);
        let mut reservation = EmailReservation::default();
        assert_eq!(reservation.user_id(), None);
        reservation.apply(reserved.clone());
        assert_eq!(reservation.joining(), Some(&joining));
        assert_eq!(reservation.user_id(), Some(&joining.user_id));
        assert_eq!(reservation.signup(), None);
        for command in [
            EmailReservationCommand::Reserve(signup()),
            EmailReservationCommand::ReserveForMember(self::joining()),
        ] {
            TestFramework::<EmailReservation>::with(())
                .given(vec![reserved.clone()])
                .when(command)
                .then_expect_error(EmailReservationError::Taken);
        }
        TestFramework::<EmailReservation>::with(())
            .given(vec![EmailReservationEvent::EmailReserved(signup())])
            .when(EmailReservationCommand::ReserveForMember(self::joining()))
            .then_expect_error(EmailReservationError::Taken);
        let released = EmailReservationEvent::EmailReleased {
            user_id: joining.user_id.clone(),
        };
        TestFramework::<EmailReservation>::with(())
            .given(vec![reserved.clone()])
            .when(EmailReservationCommand::Release {
                user_id: joining.user_id.clone(),
            })
            .then_expect_events(vec![released.clone()]);
        reservation.apply(released);
        assert_eq!(reservation.user_id(), None);
        assert_eq!(reservation.joining(), None);
    }

    #[test]
    fn the_holder_is_the_signup_user() {
        let signup = signup();
        let mut reservation = EmailReservation::default();
        reservation.apply(EmailReservationEvent::EmailReserved(signup.clone()));
        assert_eq!(reservation.user_id(), Some(&signup.user_id));
        assert_eq!(reservation.joining(), None);
    }

    #[test]
    fn reserving_a_taken_address_is_refused() {
        TestFramework::<EmailReservation>::with(())
            .given(vec![EmailReservationEvent::EmailReserved(signup())])
            .when(EmailReservationCommand::Reserve(signup()))
            .then_expect_error(EmailReservationError::Taken);
    }
}
