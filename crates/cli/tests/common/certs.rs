// Test certificates: a private CA (`ca.crt`) and a node certificate it signs for 127.0.0.1
// (`api.crt`, `api.key`), made with openssl as an operator would.

use std::path::Path;

/// Writes `ca.crt`, `api.crt` and `api.key` into `d`.
pub fn make_certs(d: &Path) {
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.crt",
        "req -newkey rsa:2048 -nodes -subj /CN=node-1 -keyout api.key -out api.csr",
        "x509 -req -in api.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out api.crt",
    ] {
        let out = std::process::Command::new("openssl")
            .args(args.split(' '))
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
