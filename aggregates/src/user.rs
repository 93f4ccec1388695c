//! The user: a person who signs in to a tenant. Password hashes are kept outside the log; the log
//! records only that a password changed.

mod command;
mod error;
mod event;

pub use command::UserCommand;
pub use error::UserError;
pub use event::UserEvent;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::{DisplayName, Email, Role, TenantId, UserId};

/// What a registered user is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub display_name: DisplayName,
    pub roles: Vec<Role>,
}

/// User state, rebuilt from its events.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct User {
    profile: Option<Profile>,
    is_platform_admin: bool,
    #[serde(default)]
    erased: bool,
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UserCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if let UserCommand::Register(profile) = command {
            return match &self.profile {
                // Registration is idempotent so that signup completion may be retried safely.
                Some(existing) if *existing == profile => Ok(()),
                Some(_) => Err(UserError::AlreadyRegistered),
                None => {
                    sink.write(UserEvent::UserRegistered(profile), self).await;
                    Ok(())
                }
            };
        }
        if self.profile.is_none() {
            return Err(UserError::NotRegistered);
        }
        if self.erased {
            return match command {
                UserCommand::Erase { .. } => Ok(()),
                _ => Err(UserError::Erased),
            };
        }
        let event = match command {
            UserCommand::Register(_) => unreachable!("handled above"),
            UserCommand::RecordPasswordChange => UserEvent::PasswordChanged {},
            UserCommand::GrantPlatformAdmin if self.is_platform_admin => return Ok(()),
            UserCommand::GrantPlatformAdmin => UserEvent::PlatformAdminGranted {},
            UserCommand::Erase { subjects } => UserEvent::UserErased { subjects },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserRegistered(profile) => self.profile = Some(profile),
            UserEvent::PlatformAdminGranted {} => self.is_platform_admin = true,
            UserEvent::UserErased { .. } => self.erased = true,
            UserEvent::UserLoggedIn {}
            | UserEvent::UserLoggedOut {}
            | UserEvent::PasswordChanged {} => {}
        }
    }
}

impl User {
    /// The profile, once registered.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Whether the user reviews objects, marks payouts paid and reads the event log.
    pub fn is_platform_admin(&self) -> bool {
        self.is_platform_admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type UserTest = TestFramework<User>;

    fn profile() -> Profile {
        Profile {
            user_id: UserId::generate(),
            tenant_id: TenantId::generate(),
            email: Email::parse("ann@example.com").unwrap(),
            display_name: DisplayName::parse("Ann").unwrap(),
            roles: vec![Role::Owner],
        }
    }

    fn erase() -> UserCommand {
        UserCommand::Erase {
            subjects: vec!["usr_1".into(), "key_1".into()],
        }
    }

    #[test]
    fn erasing_a_user_records_the_destroyed_subjects_once() {
        let profile = profile();
        UserTest::with(())
            .given(vec![UserEvent::UserRegistered(profile.clone())])
            .when(erase())
            .then_expect_events(vec![UserEvent::UserErased {
                subjects: vec!["usr_1".into(), "key_1".into()],
            }]);
        UserTest::with(())
            .given(vec![
                UserEvent::UserRegistered(profile),
                UserEvent::UserErased { subjects: vec![] },
            ])
            .when(erase())
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_erased_user_can_do_nothing_more() {
        for command in [
            UserCommand::RecordPasswordChange,
            UserCommand::GrantPlatformAdmin,
        ] {
            UserTest::with(())
                .given(vec![
                    UserEvent::UserRegistered(profile()),
                    UserEvent::UserErased { subjects: vec![] },
                ])
                .when(command)
                .then_expect_error(UserError::Erased);
        }
    }

    #[test]
    fn an_unknown_user_cannot_be_erased() {
        UserTest::with(())
            .given_no_previous_events()
            .when(erase())
            .then_expect_error(UserError::NotRegistered);
    }

    #[test]
    fn registering_a_user_records_the_profile() {
        let profile = profile();
        UserTest::with(())
            .given_no_previous_events()
            .when(UserCommand::Register(profile.clone()))
            .then_expect_events(vec![UserEvent::UserRegistered(profile)]);
    }

    #[test]
    fn registering_the_same_profile_again_changes_nothing() {
        let profile = profile();
        UserTest::with(())
            .given(vec![UserEvent::UserRegistered(profile.clone())])
            .when(UserCommand::Register(profile))
            .then_expect_events(vec![]);
    }

    #[test]
    fn registering_a_different_profile_over_a_user_is_refused() {
        UserTest::with(())
            .given(vec![UserEvent::UserRegistered(profile())])
            .when(UserCommand::Register(profile()))
            .then_expect_error(UserError::AlreadyRegistered);
    }

    #[test]
    fn password_changes_are_recorded() {
        UserTest::with(())
            .given(vec![UserEvent::UserRegistered(profile())])
            .when(UserCommand::RecordPasswordChange)
            .then_expect_events(vec![UserEvent::PasswordChanged {}]);
    }

    #[test]
    fn granting_platform_admin_is_recorded_once() {
        let registered = UserEvent::UserRegistered(profile());
        UserTest::with(())
            .given(vec![registered.clone()])
            .when(UserCommand::GrantPlatformAdmin)
            .then_expect_events(vec![UserEvent::PlatformAdminGranted {}]);
        UserTest::with(())
            .given(vec![registered, UserEvent::PlatformAdminGranted {}])
            .when(UserCommand::GrantPlatformAdmin)
            .then_expect_events(vec![]);
    }

    fn state_after(events: Vec<UserEvent>) -> User {
        let mut user = User::default();
        events.into_iter().for_each(|e| user.apply(e));
        user
    }

    #[test]
    fn the_state_knows_the_profile_and_whether_the_user_is_a_platform_admin() {
        let profile = profile();
        let registered = UserEvent::UserRegistered(profile.clone());
        let user = state_after(vec![registered.clone(), UserEvent::UserLoggedIn {}]);
        assert_eq!(user.profile(), Some(&profile));
        assert!(!user.is_platform_admin());
        let admin = state_after(vec![registered, UserEvent::PlatformAdminGranted {}]);
        assert!(admin.is_platform_admin());
        assert_eq!(User::default().profile(), None);
    }

    #[test]
    fn commands_on_an_unregistered_user_are_refused() {
        UserTest::with(())
            .given_no_previous_events()
            .when(UserCommand::RecordPasswordChange)
            .then_expect_error(UserError::NotRegistered);
    }
}
