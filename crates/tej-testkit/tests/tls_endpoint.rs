//! The TLS endpoint serves its certificate with the lifetime asked.

use rustls::pki_types::pem::PemObject;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

#[test]
fn endpoint_serves_a_certificate_expiring_when_asked() {
    let ep = tej_testkit::TlsEndpoint::start(5).unwrap();
    let ca_pem = std::fs::read(ep.ca_file()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = TcpStream::connect(ep.endpoint()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"x").unwrap();
    tls.flush().unwrap();
    let chain = tls.conn.peer_certificates().unwrap().to_vec();
    assert_eq!(chain.len(), 2, "leaf and CA");
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let left = leaf.validity().not_after.timestamp() - jiff::Timestamp::now().as_second();
    let days = left as f64 / 86_400.0;
    assert!((4.0..=5.0).contains(&days), "{days} days left");
    let served = std::fs::read_to_string(ep.cert_file()).unwrap();
    assert!(served.contains("BEGIN CERTIFICATE"));
}
