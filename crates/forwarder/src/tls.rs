//! The TLS client configuration: rustls with the ring provider (no C build, the workspace's
//! choice), trusting the operating system's CA store plus an optional extra CA file. Building
//! it ourselves (instead of reqwest's defaults) keeps the provider explicit and lets a customer
//! behind a TLS-inspecting proxy add its CA.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::ConfigError;

/// The client config: system roots, `extra_ca` (path and PEM bytes) if given; ALPN h2 and
/// http/1.1 (reqwest does not set ALPN on a preconfigured config).
pub(crate) fn client_config(extra_ca: Option<(&Path, &[u8])>) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::warn!(errors = native.errors.len(), "Some system CA certificates could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(added, ignored, "Ignored unparsable system CA certificates");
    }
    if let Some((path, pem)) = extra_ca {
        let bad = |reason: String| ConfigError::BadCaFile { path: path.to_path_buf(), reason };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| bad(format!("not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE block".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(format!("unusable certificate: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(ConfigError::NoTrustAnchors);
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
