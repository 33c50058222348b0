//! TLS material: a configured PEM certificate, or a self-signed one generated into the data
//! directory on first start and reused afterwards. TLS 1.2 and 1.3 only, on aws-lc-rs.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::infra::files::write_private_file;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not form a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate the server presents.
#[derive(Clone, Debug)]
pub struct CertificateInfo {
    pub cert_path: PathBuf,
    /// SHA-256 of the leaf certificate's DER, colon-separated upper-case hex (as browsers show it).
    pub sha256_fingerprint: String,
    /// Whether this start generated it.
    pub generated: bool,
    pub chain: Vec<CertificateDer<'static>>,
}

pub struct TlsSetup {
    pub server_config: Arc<ServerConfig>,
    pub certificate: CertificateInfo,
}

/// Loads `--tls-cert`/`--tls-key`, or the self-signed pair in `<data_dir>/tls/`, generating it
/// when absent (SANs: localhost, 127.0.0.1, ::1 and `hostnames`).
pub fn load_or_generate(
    data_dir: &Path,
    configured: Option<(&Path, &Path)>,
    hostnames: &[String],
) -> Result<TlsSetup, TlsError> {
    let (cert_path, key_path, generated) = match configured {
        Some((cert, key)) => (cert.to_path_buf(), key.to_path_buf(), false),
        None => {
            let dir = data_dir.join("tls");
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            let generated = !cert.exists() || !key.exists();
            if generated {
                generate_self_signed(&cert, &key, hostnames)?;
            }
            (cert, key, generated)
        }
    };
    let chain = read_certificates(&cert_path)?;
    let key = read_private_key(&key_path)?;
    let sha256_fingerprint = fingerprint(&chain[0]);
    let mut server_config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_single_cert(chain.clone(), key)?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsSetup {
        server_config: Arc::new(server_config),
        certificate: CertificateInfo {
            cert_path,
            sha256_fingerprint,
            generated,
            chain,
        },
    })
}

fn generate_self_signed(
    cert_path: &Path,
    key_path: &Path,
    hostnames: &[String],
) -> Result<(), TlsError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(
        hostnames
            .iter()
            .filter(|h| !names.contains(h))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let certified = rcgen::generate_simple_self_signed(names)?;
    write_private_file(key_path, certified.key_pair.serialize_pem().as_bytes()).map_err(
        |source| TlsError::Write {
            path: key_path.to_path_buf(),
            source,
        },
    )?;
    write_private_file(cert_path, certified.cert.pem().as_bytes()).map_err(|source| {
        TlsError::Write {
            path: cert_path.to_path_buf(),
            source,
        }
    })?;
    Ok(())
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let chain = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: path.to_path_buf(),
        })
}

/// SHA-256 of a certificate, as `AB:CD:…`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    digest::digest(&digest::SHA256, cert.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
