//! PEM certificate files, read one way: the proxy's TLS listener reads its
//! certificate chain and both binaries read a Postgres `sslrootcert` with
//! it, so a bad file gets the same three answers everywhere.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Every `CERTIFICATE` block of the PEM file at `path`, in file order; at
/// least one. The error says why in words an operator can act on; the
/// caller names the file and the setting.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM file of certificates: {e}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM CERTIFICATE block".into());
    }
    Ok(certificates)
}
