//! Accounts: signup, login, password changes and platform admins, orchestrated over the tenant,
//! user and e-mail-reservation aggregates.
//!
//! Signup order: hash the password and store it under a fresh user id (an orphan row, invisible,
//! if the rest fails); reserve the e-mail (the concurrency gate: of concurrent signups for one
//! address exactly one appends `EmailReserved`, the others get 409 with nothing written); then
//! create the tenant and register the user. Those two steps are idempotent and also run from the
//! `signup_completion` reactor, so a crash after the reservation still ends in a complete account.

use aggregates::email_reservation::{EmailReservationCommand, Signup};
use aggregates::login::{Login, LoginCommand};
use aggregates::tenant::TenantCommand;
use aggregates::user::{Profile, UserCommand};
use aggregates::{
    DisplayName, Email, EmailReservation, Password, Role, Tenant, TenantId, TenantName, User,
    UserId,
};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use projections::{Projection, ProjectionError, Reads, StoredEvent};
use sqlx::AnyConnection;

use crate::auth::{self, SessionGrant, Sessions};
use crate::error::AppError;
use crate::signing::SigningKey;
use crate::store::{Actor, CommandError, Store};

/// A validated signup request.
#[derive(Debug)]
pub struct NewAccount {
    pub email: Email,
    pub password: Password,
    pub display_name: DisplayName,
    pub tenant_name: TenantName,
}

/// What an erasure did.
#[derive(Debug)]
pub struct Erasure {
    pub user_id: String,
    /// The subjects whose data keys are destroyed: the user, and the keys they created.
    pub subjects: Vec<String>,
}

/// Account operations over the store.
pub struct Accounts<'a> {
    pub store: &'a Store,
    pub key: &'a SigningKey,
    pub session_ttl_seconds: u64,
}

impl Accounts<'_> {
    fn sessions(&self) -> Sessions<'_> {
        Sessions {
            db: &self.store.db,
            key: self.key,
        }
    }

    /// Creates the tenant, its owner and a session.
    pub async fn signup(&self, account: NewAccount) -> Result<SessionGrant, AppError> {
        let hash = auth::hash_password(account.password.expose().to_owned()).await?;
        let signup = Signup {
            email: account.email,
            user_id: UserId::generate(),
            tenant_id: TenantId::generate(),
            display_name: account.display_name,
            tenant_name: account.tenant_name,
        };
        self.store_credential(signup.user_id.as_str(), &hash, true)
            .await?;
        let actor = Actor::user(signup.user_id.as_str(), signup.tenant_id.as_str());
        let reserved = self
            .store
            .execute::<EmailReservation>(
                &self.key.email_reservation_id(signup.email.as_str()),
                EmailReservationCommand::Reserve(signup.clone()),
                &(),
                &actor,
            )
            .await;
        if let Err(error) = reserved {
            // The address went to someone else: leave nothing behind.
            sqlx::query("DELETE FROM credentials WHERE user_id = $1")
                .bind(signup.user_id.as_str())
                .execute(&self.store.db.pool)
                .await?;
            return Err(error.into());
        }
        complete_signup(self.store, &signup, &actor).await?;
        self.open_session(signup.user_id, signup.tenant_id).await
    }

    async fn open_session(
        &self,
        user_id: UserId,
        tenant_id: TenantId,
    ) -> Result<SessionGrant, AppError> {
        auth::open_session(
            self.store,
            self.key,
            user_id,
            tenant_id,
            self.session_ttl_seconds,
        )
        .await
    }

    /// Opens a session for a correct e-mail and password. An unknown address and a wrong password
    /// fail alike, after the same work.
    pub async fn login(&self, raw_email: &str, password: &str) -> Result<SessionGrant, AppError> {
        let email = Email::normalise(raw_email);
        let user = projections::accounts::user_by_email(&self.store.db, &email).await?;
        let user_id = user.as_ref().map_or("usr_unknown", |u| u.user_id.as_str());
        let stored = self.credential(user_id).await?;
        let user = match (
            auth::verify_password(password.to_owned(), stored).await?,
            user,
        ) {
            (true, Some(user)) => user,
            _ => return Err(AppError::InvalidCredentials),
        };
        self.open_session(user.user_id, user.tenant_id).await
    }

    /// Ends the caller's session, and closes the login that opened it (a session opened before
    /// logins were aggregates of their own closes none).
    pub async fn logout(
        &self,
        user_id: &str,
        tenant_id: &str,
        session_hash: &str,
    ) -> Result<(), AppError> {
        let login_id = self.sessions().revoke(session_hash).await?;
        if let Some(login_id) = login_id {
            self.store
                .execute::<Login>(
                    &login_id,
                    LoginCommand::Close,
                    &(),
                    &Actor::user(user_id, tenant_id),
                )
                .await?;
        }
        Ok(())
    }

    /// Replaces the password after checking the current one; every other session ends.
    pub async fn change_password(
        &self,
        user_id: &str,
        tenant_id: &str,
        session_hash: &str,
        current: &str,
        new: Password,
    ) -> Result<(), AppError> {
        let stored = self.credential(user_id).await?;
        if !auth::verify_password(current.to_owned(), stored).await? {
            return Err(AppError::InvalidCredentials);
        }
        let hash = auth::hash_password(new.expose().to_owned()).await?;
        self.store_credential(user_id, &hash, false).await?;
        self.sessions().revoke_others(user_id, session_hash).await?;
        self.store
            .execute::<User>(
                user_id,
                UserCommand::RecordPasswordChange,
                &(),
                &Actor::user(user_id, tenant_id),
            )
            .await?;
        Ok(())
    }

    async fn credential(&self, user_id: &str) -> Result<Option<String>, AppError> {
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.store.db.pool)
                .await?,
        )
    }

    async fn store_credential(
        &self,
        user_id: &str,
        hash: &str,
        insert: bool,
    ) -> Result<(), AppError> {
        let sql = if insert {
            "INSERT INTO credentials (user_id, password_hash, updated_at) VALUES ($1, $2, $3)"
        } else {
            "UPDATE credentials SET password_hash = $2, updated_at = $3 WHERE user_id = $1"
        };
        sqlx::query(sql)
            .bind(user_id)
            .bind(hash)
            .bind(aggregates::timestamp::format(self.store.clock.now()))
            .execute(&self.store.db.pool)
            .await?;
        Ok(())
    }

    /// Erases a user's personal data (GDPR art. 17). In an order that a retry completes:
    /// `UserErased` (the user can never act again; the read models show the data erased), their
    /// sessions and password hash deleted and the keys they created revoked; the address
    /// released (read while it still opens); then the data keys of the user and of those keys
    /// destroyed, after which every sealed field of theirs in the log reads as erased. The log's
    /// bytes, and so its proofs, are unchanged.
    pub async fn erase(&self, user_id: &str, actor: &Actor) -> Result<Erasure, AppError> {
        let db = &self.store.db;
        let user = self.store.load::<User>(user_id).await?;
        let profile = user.profile().cloned().ok_or(AppError::NotFound)?;
        let keys = projections::api_keys::created_transitively(db, user_id).await?;
        let mut subjects = vec![user_id.to_owned()];
        subjects.extend(keys.iter().cloned());
        // The address of the invitation they accepted is theirs too.
        subjects.extend(projections::members::accepted_by(db, user_id).await?);
        self.store
            .execute::<User>(
                user_id,
                UserCommand::Erase {
                    subjects: subjects.clone(),
                },
                &(),
                actor,
            )
            .await?;
        for sql in [
            "DELETE FROM sessions WHERE user_id = $1",
            "DELETE FROM credentials WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(user_id).execute(&db.pool).await?;
        }
        for key in &keys {
            let revoke = aggregates::api_key::ApiKeyCommand::Revoke {
                at: self.store.clock.now(),
            };
            self.store
                .execute::<aggregates::ApiKey>(key, revoke, &(), actor)
                .await?;
        }
        // After the keys are gone the address reads as erased, and this release is a no-op.
        self.store
            .execute::<EmailReservation>(
                &self.key.email_reservation_id(profile.email.as_str()),
                EmailReservationCommand::Release {
                    user_id: profile.user_id.clone(),
                },
                &(),
                actor,
            )
            .await?;
        let now = aggregates::timestamp::format(self.store.clock.now());
        projections::privacy::destroy_keys(db, &subjects, &now).await?;
        Ok(Erasure {
            user_id: user_id.to_owned(),
            subjects,
        })
    }

    /// The user holding this address, if any.
    pub async fn user_of(&self, raw_email: &str) -> Result<Option<String>, AppError> {
        let id = self.key.email_reservation_id(&Email::normalise(raw_email));
        let reservation = self.store.load::<EmailReservation>(&id).await?;
        Ok(reservation.signup().map(|s| s.user_id.to_string()))
    }

    /// Makes the user with this e-mail a platform admin. `Ok(None)`: no such user;
    /// `Ok(Some(false))`: already one (no event).
    pub async fn promote(&self, raw_email: &str) -> Result<Option<bool>, AppError> {
        let id = self.key.email_reservation_id(&Email::normalise(raw_email));
        let reservation = self.store.load::<EmailReservation>(&id).await?;
        let Some(signup) = reservation.signup() else {
            return Ok(None);
        };
        complete_signup(self.store, signup, &Actor::system()).await?;
        let committed = self
            .store
            .execute::<User>(
                signup.user_id.as_str(),
                UserCommand::GrantPlatformAdmin,
                &(),
                &Actor::system(),
            )
            .await?;
        Ok(Some(!committed.events.is_empty()))
    }

    /// Ensures the bootstrap admin exists and is promoted (SPEC §6.2).
    ///
    /// A new address is signed up with the configured password and promoted. An existing account
    /// is promoted only when the configured password verifies against it: anyone can sign up
    /// first with the address, and must not become an admin by it. An account that already is a
    /// platform admin is left as it is, whatever password is configured, so that a restart keeps
    /// working after the admin changed the password the service was first started with.
    pub async fn bootstrap_admin(
        &self,
        raw_email: &str,
        password: Option<&str>,
    ) -> Result<(), BootstrapError> {
        if let Some(signup) = self.reserved(raw_email).await? {
            return self.promote_existing(&signup, password).await;
        }
        let password = password.ok_or(BootstrapError::PasswordMissing)?;
        let account = NewAccount {
            email: Email::parse(raw_email)
                .map_err(|e| BootstrapError::Invalid(format!("email {e}")))?,
            password: Password::parse(password)
                .map_err(|e| BootstrapError::Invalid(format!("password {e}")))?,
            display_name: DisplayName::parse("Platform Admin").expect("valid constant"),
            tenant_name: TenantName::parse("Platform").expect("valid constant"),
        };
        match self.signup(account).await {
            Ok(_) => {
                self.promote(raw_email).await?;
                Ok(())
            }
            // Someone took the address meanwhile: another instance with the same settings, or a
            // signup, which the password tells apart.
            Err(AppError::EmailTaken) => match self.reserved(raw_email).await? {
                Some(signup) => self.promote_existing(&signup, Some(password)).await,
                None => Err(AppError::internal("email taken without a reservation").into()),
            },
            Err(other) => Err(other.into()),
        }
    }

    /// The signup that reserved this e-mail, if any.
    async fn reserved(&self, raw_email: &str) -> Result<Option<Signup>, BootstrapError> {
        let reservation = self
            .store
            .load::<EmailReservation>(&self.key.email_reservation_id(&Email::normalise(raw_email)))
            .await?;
        Ok(reservation.signup().cloned())
    }

    /// Promotes an existing account for the bootstrap, if it is not an admin already and the
    /// configured password is its own.
    async fn promote_existing(
        &self,
        signup: &Signup,
        password: Option<&str>,
    ) -> Result<(), BootstrapError> {
        complete_signup(self.store, signup, &Actor::system()).await?;
        let user_id = signup.user_id.as_str();
        if self.store.load::<User>(user_id).await?.is_platform_admin() {
            return Ok(());
        }
        let password = password.ok_or(BootstrapError::NotTheOperators)?;
        let stored = self.credential(user_id).await?;
        if !auth::verify_password(password.to_owned(), stored).await? {
            return Err(BootstrapError::NotTheOperators);
        }
        self.store
            .execute::<User>(
                user_id,
                UserCommand::GrantPlatformAdmin,
                &(),
                &Actor::system(),
            )
            .await?;
        Ok(())
    }
}

/// Why the bootstrap admin could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("IPTO_BOOTSTRAP_ADMIN_PASSWORD is required to create the bootstrap admin")]
    PasswordMissing,
    /// The address belongs to an account that is not an admin and whose password was not given.
    #[error(
        "IPTO_BOOTSTRAP_ADMIN_EMAIL names an existing account that is not a platform admin, and \
         IPTO_BOOTSTRAP_ADMIN_PASSWORD is missing or is not its password: refusing to promote it \
         (promote a known account with `ipto admin promote`)"
    )]
    NotTheOperators,
    #[error("invalid bootstrap admin {0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(#[from] AppError),
}

/// Creates the tenant and registers the owner of a reserved signup; both steps are idempotent.
pub async fn complete_signup(
    store: &Store,
    signup: &Signup,
    actor: &Actor,
) -> Result<(), AppError> {
    let create = TenantCommand::Create {
        tenant_id: signup.tenant_id.clone(),
        name: signup.tenant_name.clone(),
        owner: signup.user_id.clone(),
    };
    store
        .execute::<Tenant>(signup.tenant_id.as_str(), create, &(), actor)
        .await?;
    let profile = Profile {
        user_id: signup.user_id.clone(),
        tenant_id: signup.tenant_id.clone(),
        email: signup.email.clone(),
        display_name: signup.display_name.clone(),
        roles: vec![Role::Owner],
    };
    store
        .execute::<User>(
            signup.user_id.as_str(),
            UserCommand::Register(profile),
            &(),
            actor,
        )
        .await?;
    Ok(())
}

/// Reactor: finishes every reserved signup and joining (after a crash between reservation and
/// registration).
pub struct SignupCompletion {
    pub store: Store,
}

#[async_trait]
impl Projection for SignupCompletion {
    fn name(&self) -> &'static str {
        "signup_completion"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }
    fn reads(&self) -> Reads {
        Reads::Aggregates(&[EmailReservation::TYPE])
    }
    fn is_reactor(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        _: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        use aggregates::email_reservation::EmailReservationEvent;
        if event.aggregate_type != EmailReservation::TYPE {
            return Ok(());
        }
        match event.decode()? {
            EmailReservationEvent::EmailReserved(signup) => {
                complete_signup(&self.store, &signup, &Actor::system())
                    .await
                    .map_err(|e| ProjectionError::Inconsistent(format!("signup completion: {e}")))
            }
            // A refused acceptance releases the address: nothing more to do.
            EmailReservationEvent::MemberEmailReserved(joining) => crate::teams::complete_join(
                &self.store,
                &event.aggregate_id,
                &joining,
                &Actor::system(),
            )
            .await
            .map(|_| ())
            .map_err(|e| ProjectionError::Inconsistent(format!("joining completion: {e}"))),
            EmailReservationEvent::EmailReleased { .. } => Ok(()),
        }
    }
}

impl<E: std::error::Error> From<CommandError<E>> for BootstrapError
where
    AppError: From<E>,
{
    fn from(error: CommandError<E>) -> Self {
        Self::Failed(error.into())
    }
}
