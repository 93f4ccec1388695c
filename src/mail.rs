//! Invitation mail over SMTP (`IPTO_SMTP_URL`, with `lettre`). Unset, nothing is sent and the
//! inviter passes the token on.
//!
//! The URL is lettre's: `smtp://host:port` (plain, for a relay on loopback),
//! `smtp://host:587?tls=required` (STARTTLS), `smtps://user:password@host:465` (TLS). The accept
//! link is `{IPTO_PUBLIC_URL}/invitations/accept#token={token}`: the token rides in the fragment,
//! which browsers never send to a server or put in a `Referer`.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Config;

/// How long one delivery to the relay may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A mail setting or a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("IPTO_SMTP_URL: {0}")]
    Url(String),
    #[error("IPTO_SMTP_FROM: {0}")]
    From(String),
    #[error("message: {0}")]
    Message(String),
    #[error("delivery: {0}")]
    Delivery(String),
}

/// Sends mail through the configured relay.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    public_url: String,
}

/// What an invitation mail says.
pub struct InvitationMail<'a> {
    pub to: &'a str,
    pub tenant_name: &'a str,
    pub inviter: &'a str,
    pub roles: &'a [aggregates::Role],
    pub token: &'a str,
    pub expires_at: &'a str,
}

impl Mailer {
    /// The mailer of `config`, `None` when `IPTO_SMTP_URL` is unset; a malformed setting is an
    /// error (refused at start-up).
    pub fn from_config(config: &Config) -> Result<Option<Self>, MailError> {
        let Some(url) = config.smtp_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Url(e.to_string()))?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from = config
            .smtp_from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::From(e.to_string()))?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.bind))
            .trim_end_matches('/')
            .to_owned();
        Ok(Some(Self {
            transport,
            from,
            public_url,
        }))
    }

    /// The link an invitee follows to accept.
    pub fn accept_link(&self, token: &str) -> String {
        format!("{}/invitations/accept#token={token}", self.public_url)
    }

    /// Sends an invitation to its address.
    pub async fn send_invitation(&self, mail: &InvitationMail<'_>) -> Result<(), MailError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Message(e.to_string()))?;
        let roles: Vec<&str> = mail.roles.iter().map(|r| r.as_str()).collect();
        let body = format!(
            "{inviter} invited you to join {tenant} on ipto as {roles}.\n\n\
             Accept the invitation: {link}\n\n\
             Or POST {{\"token\", \"password\", \"display_name\"}} to \
             {base}/v1/invitations/accept with this token:\n\n    {token}\n\n\
             The invitation expires at {expires} (UTC).\n",
            inviter = mail.inviter,
            tenant = mail.tenant_name,
            roles = roles.join(", "),
            link = self.accept_link(mail.token),
            base = self.public_url,
            token = mail.token,
            expires = mail.expires_at,
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!(
                "You are invited to join {} on ipto",
                mail.tenant_name
            ))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Message(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| MailError::Delivery(e.to_string()))?;
        Ok(())
    }
}
