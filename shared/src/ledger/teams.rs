//! Teams and their API keys. Keys are `ar_<prefix>_<secret>`, stored as a
//! SHA-256 hash and found by their prefix.

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Ledger, StoreError};
use crate::domain::TeamId;

/// A key as shown once, at creation.
#[derive(Clone, Debug)]
pub struct IssuedKey {
    pub id: Uuid,
    pub prefix: String,
    pub secret: String,
}

fn random_text(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Splits `ar_<prefix>_<secret>` into its prefix; `None` when malformed.
fn key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("ar_")?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == 8 && !secret.is_empty()).then_some(prefix)
}

/// Compares secrets without an early exit that would leak where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A stream token's lifetime.
pub const STREAM_TOKEN_SECONDS: i64 = 300;

impl Ledger {
    /// A new stream token for one run of `team`, valid for
    /// `STREAM_TOKEN_SECONDS`; the token and when it expires. Expired
    /// tokens are swept as new ones are made.
    pub async fn issue_stream_token(
        &self,
        team: TeamId,
        run: crate::domain::RunId,
    ) -> Result<(String, chrono::DateTime<chrono::Utc>), StoreError> {
        let token = format!("st_{}", random_text(40));
        let row = self
            .client()
            .await?
            .q_one(
                "WITH swept AS (DELETE FROM stream_tokens WHERE expires_at < now() - interval '1 hour')
                 INSERT INTO stream_tokens (token_hash, run_id, team_id, expires_at)
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4))
                 RETURNING expires_at",
                &[
                    &hash_key(&token),
                    &run.0,
                    &team.0,
                    &(STREAM_TOKEN_SECONDS as f64),
                ],
            )
            .await?;
        Ok((token, row.get(0)))
    }

    /// The team and run a stream token is for, unless it is unknown or
    /// expired.
    pub async fn stream_token(
        &self,
        token: &str,
    ) -> Result<Option<(TeamId, crate::domain::RunId)>, StoreError> {
        if !token.starts_with("st_") {
            return Ok(None);
        }
        let row = self
            .client()
            .await?
            .q_opt(
                "SELECT team_id, run_id FROM stream_tokens
                 WHERE token_hash = $1 AND expires_at > now()",
                &[&hash_key(token)],
            )
            .await?;
        Ok(row.map(|row| (TeamId(row.get(0)), crate::domain::RunId(row.get(1)))))
    }

    /// Returns the team with this name, creating it when missing.
    pub async fn ensure_team(&self, name: &str) -> Result<TeamId, StoreError> {
        let row = self
            .client()
            .await?
            .q_one(
                "INSERT INTO teams (id, name) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
                 RETURNING id",
                &[&TeamId::new().0, &name],
            )
            .await?;
        Ok(TeamId(row.get(0)))
    }

    /// A new key for `team`, valid until `expires_at` when given.
    pub async fn issue_api_key(
        &self,
        team: TeamId,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<IssuedKey, StoreError> {
        let prefix = random_text(8);
        let secret = format!("ar_{prefix}_{}", random_text(32));
        let id = Uuid::now_v7();
        self.client()
            .await?
            .exec(
                "INSERT INTO api_keys (id, team_id, prefix, key_hash, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&id, &team.0, &prefix, &hash_key(&secret), &expires_at],
            )
            .await?;
        Ok(IssuedKey { id, prefix, secret })
    }

    /// The team a presented key belongs to, if the key is valid, not revoked
    /// and not expired.
    pub async fn authenticate(&self, key: &str) -> Result<Option<TeamId>, StoreError> {
        let Some(prefix) = key_prefix(key) else {
            return Ok(None);
        };
        let row = self
            .client()
            .await?
            .q_opt(
                "SELECT team_id, key_hash FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > now())",
                &[&prefix],
            )
            .await?;
        Ok(row.and_then(|row| {
            let stored: String = row.get(1);
            constant_time_eq(stored.as_bytes(), hash_key(key).as_bytes())
                .then(|| TeamId(row.get(0)))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_are_parsed_strictly() {
        assert_eq!(key_prefix("ar_abcdefgh_secret"), Some("abcdefgh"));
        assert_eq!(key_prefix("ar_abc_secret"), None);
        assert_eq!(key_prefix("ar_abcdefgh_"), None);
        assert_eq!(key_prefix("bearer"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
