use super::Signup;

/// Commands on an e-mail reservation.
#[derive(Debug, Clone)]
pub enum EmailReservationCommand {
    /// Reserve the address for a new signup.
    Reserve(Signup),
    /// Free the address of the erased user holding it (a no-op otherwise): it may be registered
    /// again.
    Release { user_id: crate::UserId },
}
