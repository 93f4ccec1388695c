use super::{Joining, Signup};

/// Commands on an e-mail reservation.
#[derive(Debug, Clone)]
pub enum EmailReservationCommand {
    /// Reserve the address for a new signup.
    Reserve(Signup),
    /// Reserve the address for a member joining by invitation.
    ReserveForMember(Joining),
    /// Free the address of the erased or removed user holding it (a no-op otherwise): it may be registered
    /// again.
    Release { user_id: crate::UserId },
}
