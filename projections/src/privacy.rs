//! Personal data in an immutable log (GDPR art. 17, crypto-shredding).
//!
//! The fields that hold personal data — a user's e-mail address and display name, in
//! `UserRegistered`, `EmailReserved` and `MemberEmailReserved`, an invitation's address in
//! `MemberInvited`, and the text of a search — are written to the log sealed:
//! AES-256-GCM under a key of their data subject (a user, or an API key for the searches it ran),
//! kept in `subject_keys` beside the log, as password hashes are. A sealed field is the string
//! `sealed:v1:{subject}:{base64url(nonce ‖ ciphertext ‖ tag)}`, bound (as associated data) to its
//! event and field, so it cannot be moved to another event. The audit tree hashes the stored,
//! sealed bytes.
//!
//! Erasure destroys the subject's key. From then on the log still holds the same bytes, so every
//! leaf and proof stays valid, but a read opens each of the subject's fields to a placeholder
//! ([`erased`]): the read models, a rebuild and an aggregate load all see the data as erased.

use std::collections::{BTreeSet, HashMap};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;
use sqlx::Row;

use crate::Db;

/// The prefix of a sealed field.
pub const SEALED: &str = "sealed:v1:";

/// Whose data a rule's fields are.
#[derive(Clone, Copy, Debug)]
enum Subject {
    /// The aggregate itself (a user).
    Aggregate,
    /// The id in this field of the event (a reservation names its user).
    Field(&'static str),
    /// The event's actor, a user or an API key (a search).
    Actor,
}

/// The personal fields of one kind of event, inside its payload's variant object.
struct Rule {
    aggregate_type: &'static str,
    event_type: &'static str,
    subject: Subject,
    fields: &'static [&'static str],
}

/// Every event type that holds personal data, and its fields.
const RULES: &[Rule] = &[
    Rule {
        aggregate_type: "user",
        event_type: "UserRegistered",
        subject: Subject::Aggregate,
        fields: &["email", "display_name"],
    },
    Rule {
        aggregate_type: "email_reservation",
        event_type: "EmailReserved",
        subject: Subject::Field("user_id"),
        fields: &["email", "display_name"],
    },
    Rule {
        aggregate_type: "email_reservation",
        event_type: "MemberEmailReserved",
        subject: Subject::Field("user_id"),
        fields: &["email", "display_name"],
    },
    // An invitation's address is the invitee's until they join; erasing the member who accepted
    // it destroys the invitation's key too.
    Rule {
        aggregate_type: "tenant",
        event_type: "MemberInvited",
        subject: Subject::Field("invitation_id"),
        fields: &["email"],
    },
    Rule {
        aggregate_type: "search",
        event_type: "SearchPerformed",
        subject: Subject::Actor,
        fields: &["query_text"],
    },
];

fn rule(aggregate_type: &str, event_type: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .find(|r| r.aggregate_type == aggregate_type && r.event_type == event_type)
}

/// Whether events of this kind may hold sealed fields.
pub fn holds_personal_data(aggregate_type: &str, event_type: &str) -> bool {
    rule(aggregate_type, event_type).is_some()
}

/// What an erased field reads as: a valid value of the field's type, unique per subject for the
/// e-mail address (read models keep addresses unique).
pub fn erased(field: &str, subject: &str) -> String {
    match field {
        "email" => format!("erased.{}@erased.invalid", subject.to_lowercase()),
        "display_name" => "Erased user".to_owned(),
        _ => "[erased]".to_owned(),
    }
}

/// The event's variant object: cqrs-es stores an enum externally tagged, `{"Variant": {...}}`.
fn fields_of<'a>(
    payload: &'a mut Value,
    event_type: &str,
) -> Option<&'a mut serde_json::Map<String, Value>> {
    payload.get_mut(event_type)?.as_object_mut()
}

/// The data subject of an event's personal fields, if it has any.
pub fn subject_of(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    payload: &Value,
    actor_id: &str,
) -> Option<String> {
    let rule = rule(aggregate_type, event_type)?;
    match rule.subject {
        Subject::Aggregate => Some(aggregate_id.to_owned()),
        Subject::Field(name) => payload
            .get(event_type)?
            .get(name)?
            .as_str()
            .map(str::to_owned),
        Subject::Actor => Some(actor_id)
            .filter(|a| a.starts_with("usr_") || a.starts_with("key_"))
            .map(str::to_owned),
    }
}

/// Subjects' data keys as stored: `None` once erased.
#[derive(Clone, Debug, Default)]
pub struct Keys(HashMap<String, Option<[u8; 32]>>);

impl Keys {
    fn get(&self, subject: &str) -> Option<&[u8; 32]> {
        self.0.get(subject).and_then(Option::as_ref)
    }
}

/// A key or a sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("no data key for subject {0}")]
    NoKey(String),
    #[error("the system's random source failed")]
    Random,
}

fn decode_key(hex_key: Option<String>) -> Option<[u8; 32]> {
    hex::decode(hex_key?).ok()?.try_into().ok()
}

/// The stored keys of `subjects` (erased ones as `None`, unknown ones absent).
pub async fn keys(db: &Db, subjects: &BTreeSet<String>) -> Result<Keys, sqlx::Error> {
    let mut keys = Keys::default();
    let subjects: Vec<&String> = subjects.iter().collect();
    for chunk in subjects.chunks(500) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT subject_id, data_key FROM subject_keys WHERE subject_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for subject in chunk {
            query = query.bind(subject.as_str());
        }
        for row in query.fetch_all(&db.pool).await? {
            keys.0.insert(
                row.try_get("subject_id")?,
                decode_key(row.try_get("data_key")?),
            );
        }
    }
    Ok(keys)
}

/// The keys of `subjects`, creating a fresh random key for each that has none (an erased subject
/// keeps none).
pub async fn ensure_keys(
    db: &Db,
    subjects: &BTreeSet<String>,
    now: &str,
) -> Result<Keys, SealError> {
    let known = keys(db, subjects).await?;
    let missing: Vec<&String> = subjects
        .iter()
        .filter(|s| !known.0.contains_key(*s))
        .collect();
    if missing.is_empty() {
        return Ok(known);
    }
    let random = SystemRandom::new();
    for subject in missing {
        let mut key = [0u8; 32];
        random.fill(&mut key).map_err(|_| SealError::Random)?;
        // Another writer may create the subject's key first; its key is the one kept.
        sqlx::query(
            "INSERT INTO subject_keys (subject_id, data_key, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (subject_id) DO NOTHING",
        )
        .bind(subject.as_str())
        .bind(hex::encode(key))
        .bind(now)
        .execute(&db.pool)
        .await?;
    }
    Ok(keys(db, subjects).await?)
}

/// Destroys the keys of `subjects`: their sealed fields read as erased from now on.
pub async fn destroy_keys(db: &Db, subjects: &[String], now: &str) -> Result<(), sqlx::Error> {
    for subject in subjects {
        sqlx::query(
            "INSERT INTO subject_keys (subject_id, data_key, created_at, erased_at) \
             VALUES ($1, NULL, $2, $2) \
             ON CONFLICT (subject_id) DO UPDATE SET data_key = NULL, erased_at = $2",
        )
        .bind(subject.as_str())
        .bind(now)
        .execute(&db.pool)
        .await?;
    }
    Ok(())
}

fn aad(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    field: &str,
    subject: &str,
) -> String {
    format!("ipto-sealed/v1\n{aggregate_type}\n{aggregate_id}\n{event_type}\n{field}\n{subject}")
}

fn cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

/// An event's identity, which its sealed fields are bound to.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub event_type: &'a str,
}

/// Seals the plain personal fields of `payload` for `subject` (an erased subject's fields are
/// written as erased). Fields already sealed are left as they are.
pub fn seal(
    event: EventRef<'_>,
    payload: &mut Value,
    subject: &str,
    keys: &Keys,
) -> Result<(), SealError> {
    let Some(rule) = rule(event.aggregate_type, event.event_type) else {
        return Ok(());
    };
    let Some(fields) = fields_of(payload, event.event_type) else {
        return Ok(());
    };
    let random = SystemRandom::new();
    for name in rule.fields {
        let Some(Value::String(plain)) = fields.get(*name) else {
            continue;
        };
        if plain.starts_with(SEALED) {
            continue;
        }
        let sealed = match keys.0.get(subject) {
            None => return Err(SealError::NoKey(subject.to_owned())),
            Some(None) => erased(name, subject),
            Some(Some(key)) => {
                let mut nonce = [0u8; NONCE_LEN];
                random.fill(&mut nonce).map_err(|_| SealError::Random)?;
                let mut bytes = plain.as_bytes().to_vec();
                let aad = aad(
                    event.aggregate_type,
                    event.aggregate_id,
                    event.event_type,
                    name,
                    subject,
                );
                cipher(key)
                    .seal_in_place_append_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad.as_bytes()),
                        &mut bytes,
                    )
                    .expect("sealing in memory succeeds");
                let mut out = nonce.to_vec();
                out.extend_from_slice(&bytes);
                format!("{SEALED}{subject}:{}", URL_SAFE_NO_PAD.encode(out))
            }
        };
        fields.insert((*name).to_owned(), Value::String(sealed));
    }
    Ok(())
}

/// The subjects of the sealed fields in `payload`.
pub fn sealed_subjects(
    aggregate_type: &str,
    event_type: &str,
    payload: &Value,
    out: &mut BTreeSet<String>,
) {
    let Some(rule) = rule(aggregate_type, event_type) else {
        return;
    };
    for name in rule.fields {
        if let Some(subject) = payload
            .get(event_type)
            .and_then(|f| f.get(*name))
            .and_then(Value::as_str)
            .and_then(parse)
            .map(|(subject, _)| subject)
        {
            out.insert(subject.to_owned());
        }
    }
}

/// `sealed:v1:{subject}:{data}` → `(subject, data)`.
fn parse(value: &str) -> Option<(&str, &str)> {
    value.strip_prefix(SEALED)?.split_once(':')
}

/// Opens the sealed fields of `payload`: each to its plain value, or to [`erased`] when its
/// subject's key is gone (or the field does not open: it was altered). Whether any was sealed.
pub fn open(event: EventRef<'_>, payload: &mut Value, keys: &Keys) -> bool {
    let Some(rule) = rule(event.aggregate_type, event.event_type) else {
        return false;
    };
    let Some(fields) = fields_of(payload, event.event_type) else {
        return false;
    };
    let mut any = false;
    for name in rule.fields {
        let Some(Value::String(value)) = fields.get(*name) else {
            continue;
        };
        let Some((subject, data)) = parse(value) else {
            continue;
        };
        any = true;
        let aad = aad(
            event.aggregate_type,
            event.aggregate_id,
            event.event_type,
            name,
            subject,
        );
        let plain = keys
            .get(subject)
            .and_then(|key| {
                let mut bytes = URL_SAFE_NO_PAD.decode(data).ok()?;
                if bytes.len() < NONCE_LEN {
                    return None;
                }
                let mut sealed = bytes.split_off(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(&bytes).ok()?;
                let plain = cipher(key)
                    .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut sealed)
                    .ok()?;
                String::from_utf8(plain.to_vec()).ok()
            })
            .unwrap_or_else(|| erased(name, subject));
        fields.insert((*name).to_owned(), Value::String(plain));
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const EVENT: EventRef<'static> = EventRef {
        aggregate_type: "user",
        aggregate_id: "usr_1",
        event_type: "UserRegistered",
    };

    fn keys(subject: &str, key: Option<[u8; 32]>) -> Keys {
        Keys(HashMap::from([(subject.to_owned(), key)]))
    }

    fn registered(email: &str, name: &str) -> Value {
        json!({"UserRegistered": {"user_id": "usr_1", "tenant_id": "tnt_1", "email": email,
            "display_name": name, "roles": ["owner"]}})
    }

    proptest! {
        #[test]
        fn sealing_then_opening_gives_the_fields_back(
            email in "[a-z0-9.]{1,30}@[a-z]{1,10}\\.[a-z]{2,5}",
            name in "\\PC{0,60}",
            key in any::<[u8; 32]>(),
        ) {
            let original = registered(&email, &name);
            let mut payload = original.clone();
            let keys = keys("usr_1", Some(key));
            seal(EVENT, &mut payload, "usr_1", &keys).unwrap();
            let text = payload.to_string();
            prop_assert!(!text.contains(&email), "{text}");
            prop_assert_eq!(&payload["UserRegistered"]["user_id"], "usr_1");
            prop_assert!(open(EVENT, &mut payload, &keys));
            prop_assert_eq!(payload, original);
        }
    }

    #[test]
    fn a_destroyed_key_opens_to_the_erased_placeholders() {
        let mut payload = registered("ann@example.com", "Ann");
        seal(EVENT, &mut payload, "usr_1", &keys("usr_1", Some([7; 32]))).unwrap();
        assert!(open(EVENT, &mut payload, &keys("usr_1", None)));
        assert_eq!(
            payload["UserRegistered"]["email"],
            "erased.usr_1@erased.invalid"
        );
        assert_eq!(payload["UserRegistered"]["display_name"], "Erased user");
    }

    #[test]
    fn a_field_moved_to_another_event_or_altered_does_not_open() {
        let key = keys("usr_1", Some([7; 32]));
        let mut payload = registered("ann@example.com", "Ann");
        seal(EVENT, &mut payload, "usr_1", &key).unwrap();
        let other = EventRef {
            aggregate_id: "usr_2",
            ..EVENT
        };
        let mut moved = payload.clone();
        open(other, &mut moved, &key);
        assert_eq!(
            moved["UserRegistered"]["email"],
            "erased.usr_1@erased.invalid"
        );
        // One character of the ciphertext changed (the middle one, to another).
        let mut sealed = payload["UserRegistered"]["email"]
            .as_str()
            .unwrap()
            .to_owned();
        let middle = sealed.len() / 2 + SEALED.len() / 2;
        let other = if &sealed[middle..=middle] == "A" {
            "B"
        } else {
            "A"
        };
        sealed.replace_range(middle..=middle, other);
        let mut altered = payload.clone();
        altered["UserRegistered"]["email"] = sealed.into();
        open(EVENT, &mut altered, &key);
        assert_eq!(
            altered["UserRegistered"]["email"],
            "erased.usr_1@erased.invalid"
        );
    }

    #[test]
    fn an_erased_subject_is_written_erased_and_an_unknown_one_refused() {
        let mut payload = registered("ann@example.com", "Ann");
        seal(EVENT, &mut payload, "usr_1", &keys("usr_1", None)).unwrap();
        assert_eq!(
            payload["UserRegistered"]["email"],
            "erased.usr_1@erased.invalid"
        );
        let mut payload = registered("ann@example.com", "Ann");
        assert!(matches!(
            seal(EVENT, &mut payload, "usr_1", &Keys::default()),
            Err(SealError::NoKey(_))
        ));
    }

    #[test]
    fn subjects_come_from_the_aggregate_a_field_or_the_actor() {
        let reserved = json!({"EmailReserved": {"user_id": "usr_9", "email": "a@b.c"}});
        assert_eq!(
            subject_of(
                "email_reservation",
                "eml_x",
                "EmailReserved",
                &reserved,
                "usr_9"
            )
            .as_deref(),
            Some("usr_9")
        );
        assert_eq!(
            subject_of("user", "usr_1", "UserRegistered", &json!({}), "").as_deref(),
            Some("usr_1")
        );
        let search = json!({"SearchPerformed": {"query_text": "q"}});
        assert_eq!(
            subject_of("search", "srch_1", "SearchPerformed", &search, "key_3").as_deref(),
            Some("key_3")
        );
        assert_eq!(
            subject_of("search", "srch_1", "SearchPerformed", &search, ""),
            None
        );
        assert_eq!(
            subject_of("dataset", "dset_1", "DatasetCreated", &search, "usr_1"),
            None
        );
    }
}
