use super::Profile;

/// Commands on a user.
#[derive(Debug, Clone)]
pub enum UserCommand {
    /// Register the user (idempotent for the same profile).
    Register(Profile),
    /// The password was replaced (the hash itself is kept outside the log).
    RecordPasswordChange,
    /// Make the user a platform admin; a no-op when already one.
    GrantPlatformAdmin,
    /// Erase the user's personal data (GDPR art. 17): the keys of `subjects` (the user and the
    /// API keys they created) are destroyed, and the user can never act again. A no-op when
    /// already erased.
    Erase { subjects: Vec<String> },
}
