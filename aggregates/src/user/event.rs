use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::Profile;

/// Facts about a user. None carries a password, hash or token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The user was registered with this profile.
    UserRegistered(Profile),
    /// The user logged in (as logins were recorded before each had a `login` of its own).
    UserLoggedIn {},
    /// The user logged out (as logouts were recorded before each login had its own).
    UserLoggedOut {},
    /// The user changed their password; their other sessions were revoked.
    PasswordChanged {},
    /// The user became a platform admin.
    PlatformAdminGranted {},
    /// The user's personal data was erased: the data keys of these subjects (the user, and the
    /// API keys they created) are destroyed, so their sealed fields read as erased.
    UserErased { subjects: Vec<String> },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserRegistered(_) => "UserRegistered",
            UserEvent::UserLoggedIn {} => "UserLoggedIn",
            UserEvent::UserLoggedOut {} => "UserLoggedOut",
            UserEvent::PasswordChanged {} => "PasswordChanged",
            UserEvent::PlatformAdminGranted {} => "PlatformAdminGranted",
            UserEvent::UserErased { .. } => "UserErased",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}
