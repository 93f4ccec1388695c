/// Business-rule violations on an e-mail reservation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailReservationError {
    /// The address is registered already (409 `email_taken`).
    #[error("email already registered")]
    Taken,
}
