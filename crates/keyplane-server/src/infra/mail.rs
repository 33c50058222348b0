//! Outgoing mail (invitations): through SMTP when `--smtp-url` is set (lettre over rustls),
//! otherwise written as `.eml` files to `<data-dir>/outbox/` (mode 0600) and logged by path, so a
//! fresh install can onboard people without a mail server. The path is logged, never the body:
//! the body carries a single-use token.

use std::path::PathBuf;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::infra::files::{ensure_private_dir, write_private_file};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address: {0}")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("cannot deliver the message: {0}")]
    Deliver(String),
}

pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Outbox {
        dir: PathBuf,
        from: Mailbox,
    },
}

impl Mailer {
    pub fn new(smtp_url: Option<&str>, from: &str, outbox: PathBuf) -> Result<Self, MailError> {
        let from: Mailbox = from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Address(e.to_string()))?;
        Ok(match smtp_url {
            Some(url) => Mailer::Smtp {
                transport: AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| MailError::Deliver(e.to_string()))?
                    .build(),
                from,
            },
            None => Mailer::Outbox { dir: outbox, from },
        })
    }

    fn from(&self) -> &Mailbox {
        match self {
            Mailer::Smtp { from, .. } | Mailer::Outbox { from, .. } => from,
        }
    }

    /// Sends a plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Address(e.to_string()))?;
        let message = Message::builder()
            .from(self.from().clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Build(e.to_string()))?;
        match self {
            Mailer::Smtp { transport, .. } => {
                transport
                    .send(message)
                    .await
                    .map_err(|e| MailError::Deliver(e.to_string()))?;
                tracing::info!("sent a message by SMTP");
            }
            Mailer::Outbox { dir, .. } => {
                ensure_private_dir(dir).map_err(|e| MailError::Deliver(e.to_string()))?;
                let path = dir.join(format!("{}.eml", uuid::Uuid::now_v7()));
                write_private_file(&path, &message.formatted())
                    .map_err(|e| MailError::Deliver(e.to_string()))?;
                tracing::info!(path = %path.display(), "wrote a message to the outbox");
            }
        }
        Ok(())
    }
}
