//! Password hashing (argon2id, PHC strings) and login checks.

use crate::config::AuthSection;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tern_store::{Directory, MailboxId, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    BadCredentials,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

pub struct Authenticator {
    directory: Arc<dyn Directory>,
    argon2: Argon2<'static>,
    /// Verified against when the user does not exist, so that a login for an unknown user costs
    /// as much as one with a wrong password and does not reveal which users exist.
    dummy_hash: String,
}

impl Authenticator {
    pub fn new(directory: Arc<dyn Directory>, cfg: &AuthSection) -> Result<Self, AuthError> {
        let params = Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            None,
        )
        .map_err(|e| AuthError::Hash(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_with(&argon2, "tern-dummy-password")?;
        Ok(Self {
            directory,
            argon2,
            dummy_hash,
        })
    }

    pub fn hash_password(&self, password: &str) -> Result<String, AuthError> {
        hash_with(&self.argon2, password)
    }

    /// Checks a login; returns the user's INBOX. The user name is matched lower-cased.
    pub async fn login(&self, username: &str, password: &str) -> Result<MailboxId, AuthError> {
        let name = username.trim().to_lowercase();
        let user = self.directory.get_user(&name).await?;
        let (hash, inbox) = match user {
            Some(u) => (u.password_hash, Some(u.inbox)),
            None => (self.dummy_hash.clone(), None),
        };
        let password = password.to_string();
        // Hashing is deliberately expensive: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || verify(&hash, &password))
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        match (ok, inbox) {
            (true, Some(inbox)) => Ok(inbox),
            _ => Err(AuthError::BadCredentials),
        }
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Verifies with the parameters stored in the hash itself.
fn verify(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}
