//! TLS to PostgreSQL, as the database URL asks for it (`sslmode`, as libpq
//! reads it): `disable` (the default) connects in plain text; `prefer` and
//! `require` encrypt without checking the server's certificate; `verify-full`
//! checks the certificate chain (against `sslrootcert`, a PEM file such as
//! the Amazon RDS CA bundle, or else the Mozilla roots) and the host name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

/// How to connect: the driver's config, and TLS when asked for.
pub struct Connection {
    pub config: tokio_postgres::Config,
    pub tls: Option<MakeRustlsConnect>,
}

/// Reads `database_url`, taking out the TLS settings the driver does not
/// know (`verify-full`, `sslrootcert`).
pub fn connection(database_url: &str) -> Result<Connection, StoreError> {
    let invalid = |reason: String| StoreError::Rejected(format!("invalid database URL: {reason}"));
    let (rest, mode, root_cert) = split_tls_settings(database_url).map_err(invalid)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| invalid(format!("{e}")))?;
    let tls = match mode.as_deref() {
        None | Some("disable") => {
            config.ssl_mode(SslMode::Disable);
            None
        }
        Some(mode @ ("allow" | "prefer" | "require")) => {
            config.ssl_mode(if mode == "require" {
                SslMode::Require
            } else {
                SslMode::Prefer
            });
            Some(unverified()?)
        }
        Some("verify-full") => {
            config.ssl_mode(SslMode::Require);
            Some(verified(root_cert.as_deref())?)
        }
        Some(other) => {
            return Err(invalid(format!(
                "sslmode {other:?} is not supported (use disable, prefer, require or verify-full)"
            )))
        }
    };
    Ok(Connection { config, tls })
}

/// The URL without `sslmode` and `sslrootcert`, and their values.
fn split_tls_settings(
    database_url: &str,
) -> Result<(String, Option<String>, Option<String>), String> {
    let Ok(mut url) = url::Url::parse(database_url) else {
        // A key=value connection string: the driver reads it as it is.
        return Ok((database_url.to_owned(), None, None));
    };
    let (mut mode, mut root_cert) = (None, None);
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(key, value)| match key.as_ref() {
            "sslmode" => {
                mode = Some(value.into_owned());
                None
            }
            "sslrootcert" => {
                root_cert = Some(value.into_owned());
                None
            }
            _ => Some((key.into_owned(), value.into_owned())),
        })
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((url.to_string(), mode, root_cert))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verified(root_cert: Option<&str>) -> Result<MakeRustlsConnect, StoreError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| StoreError::Rejected(format!("sslrootcert {path}: {e}")))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| StoreError::Rejected(format!("sslrootcert {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| StoreError::Rejected(format!("sslrootcert {path}: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Rejected(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn unverified() -> Result<MakeRustlsConnect, StoreError> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Rejected(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `sslmode=require`: encrypted, but any certificate is accepted (libpq's
/// meaning); signatures are still checked so the session keys are sound.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_read_from_the_url() {
        let (rest, mode, root) = split_tls_settings(
            "postgres://u:p@db.example:5432/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example:5432/app?application_name=x"
        );
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        assert!(connection("postgres://h/db?sslmode=verify-ca").is_err());
        assert!(connection("postgres://h/db").unwrap().tls.is_none());
        assert!(connection("postgres://h/db?sslmode=require")
            .unwrap()
            .tls
            .is_some());
    }
}
