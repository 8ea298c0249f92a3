//! Where mail that processing cannot deliver goes: James's mail repositories, with James's
//! names. Tern refuses at RCPT or DATA whatever it can (the sender's server then reports it),
//! so only what was already accepted is kept here:
//! - `var/mail/error/`: a copy for a recipient that a forward sent round in a loop while the
//!   others of the same SMTP transaction got theirs; a bounce that could not be delivered;
//! - `var/mail/address-error/`: a copy for a rewriting target (a group member, an alias
//!   target) in a served domain that has no such user.

use tern_store::{
    BodyReader, MailRepositories, MailStore, NewRepositoryMail, RepositoryMail, Result,
};

/// Processing errors.
pub const ERROR: &str = "var/mail/error/";
/// Recipients that do not exist.
pub const ADDRESS_ERROR: &str = "var/mail/address-error/";
/// The repositories Tern fills itself: listed even while empty, as James lists its configured
/// ones.
pub const BUILT_IN: [&str; 2] = [ERROR, ADDRESS_ERROR];

/// Keeps a copy of a message read from `body` (after `prefix`, minus its first `skip` octets,
/// the header a delivered copy has of its own) in a repository.
pub async fn keep(
    mail: &dyn MailStore,
    repositories: &dyn MailRepositories,
    prefix: &[u8],
    mut body: Box<dyn BodyReader>,
    mut skip: usize,
    entry: NewRepositoryMail,
) -> Result<RepositoryMail> {
    let mut writer = mail.begin_body().await?;
    let copied = async {
        writer.write(prefix).await?;
        while let Some(chunk) = body.next_chunk().await? {
            let from = skip.min(chunk.len());
            skip -= from;
            writer.write(&chunk[from..]).await?;
        }
        Ok::<_, tern_store::StoreError>(())
    }
    .await;
    if let Err(e) = copied {
        writer.abort().await;
        return Err(e);
    }
    let staged = writer.finish().await?;
    repositories.store_in_repository(staged, entry).await
}
