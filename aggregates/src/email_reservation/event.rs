use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{Joining, Signup};

/// Facts about an e-mail reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EmailReservationEvent {
    /// The address now belongs to this signup; tenant and user follow.
    EmailReserved(Signup),
    /// The address now belongs to a member joining by invitation; the acceptance and the user
    /// follow.
    MemberEmailReserved(Joining),
    /// The user holding the address was erased or removed, or their joining failed; the address is
    /// free.
    EmailReleased { user_id: crate::UserId },
}

impl DomainEvent for EmailReservationEvent {
    fn event_type(&self) -> String {
        match self {
            EmailReservationEvent::EmailReserved(_) => "EmailReserved".into(),
            EmailReservationEvent::MemberEmailReserved(_) => "MemberEmailReserved".into(),
            EmailReservationEvent::EmailReleased { .. } => "EmailReleased".into(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}
