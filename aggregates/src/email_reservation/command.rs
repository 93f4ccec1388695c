use super::Signup;

/// Commands on an e-mail reservation.
#[derive(Debug, Clone)]
pub enum EmailReservationCommand {
    /// Reserve the address for a new signup.
    Reserve(Signup),
}
