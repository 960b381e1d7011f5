//! A real OpenLDAP server (Debian's `slapd`) on a free loopback port, seeded with the test
//! IdP's users (`idp::USERS`) and nested groups; stopped when dropped.
//!
//! People: alice (employeeNumber 1001, in `finance`), bob (1002, in `helpdesk`), dave (1004,
//! in `it`), and carol twice (two entries with her email: which one is her cannot be told).
//! Groups: `payroll-approvers` holds the group `finance`; `all-staff` holds the groups
//! `payroll-approvers` and `helpdesk` — so alice is in finance, payroll-approvers and
//! all-staff, only the first directly.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The suffix of the test directory.
pub const BASE: &str = "dc=corp,dc=example";
/// The gateway's bind account (the directory's root DN here). TEST ONLY.
pub const BIND_DN: &str = "cn=portcullis,dc=corp,dc=example";
/// Its password. TEST ONLY.
pub const BIND_PASSWORD: &str = "ldap-test-bind-password";

const SEED: &str = "dn: dc=corp,dc=example
objectClass: dcObject
objectClass: organization
o: Corp
dc: corp

dn: ou=people,dc=corp,dc=example
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=corp,dc=example
objectClass: organizationalUnit
ou: groups

dn: uid=alice,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: alice
cn: Alice Example
sn: Example
mail: alice@corp.example
employeeNumber: 1001
departmentNumber: Finance

dn: uid=bob,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: bob
cn: Bob Example
sn: Example
mail: bob@corp.example
employeeNumber: 1002
departmentNumber: Helpdesk

dn: uid=dave,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: dave
cn: Dave Operator
sn: Operator
mail: dave@corp.example
employeeNumber: 1004

dn: uid=carol,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: carol
cn: Carol Contractor
sn: Contractor
mail: carol@contractors.corp.example

dn: uid=carol2,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: carol2
cn: Carol Contractor
sn: Contractor
mail: carol@contractors.corp.example

dn: cn=finance,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: finance
member: uid=alice,ou=people,dc=corp,dc=example

dn: cn=helpdesk,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: helpdesk
member: uid=bob,ou=people,dc=corp,dc=example

dn: cn=it,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: it
member: uid=dave,ou=people,dc=corp,dc=example

dn: cn=payroll-approvers,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: payroll-approvers
member: cn=finance,ou=groups,dc=corp,dc=example

dn: cn=all-staff,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: all-staff
member: cn=payroll-approvers,ou=groups,dc=corp,dc=example
member: cn=helpdesk,ou=groups,dc=corp,dc=example
";

/// The running server.
pub struct TestLdap {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl TestLdap {
    /// Seeds a fresh database and starts `slapd` on a free port.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {pid}\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             database mdb\nsuffix \"{BASE}\"\nrootdn \"{BIND_DN}\"\nrootpw {BIND_PASSWORD}\n\
             directory {db}\nmaxsize 10485760\n",
            pid = dir.path().join("slapd.pid").display(),
            db = db.display(),
        );
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        std::fs::write(dir.path().join("seed.ldif"), SEED).unwrap();
        let seeded = Command::new("slapadd")
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(dir.path().join("seed.ldif"))
            .output()
            .expect("slapadd runs (Debian's slapd: ./tests/run.sh installs it)");
        assert!(
            seeded.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&seeded.stderr)
        );
        let server = Self {
            port: super::free_addr().port(),
            dir,
        };
        server.launch().await;
        server
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("slapd.pid")
    }

    async fn launch(&self) {
        let status = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(self.url() + "/")
            .status()
            .expect("slapd runs");
        assert!(status.success(), "slapd did not start");
        super::wait_for_port(self.port, "slapd").await;
    }

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its port refuses connections until [`Self::restart`]).
    pub fn stop(&self) {
        let Ok(pid) = std::fs::read_to_string(self.pid_file()) else {
            return;
        };
        let _ = Command::new("kill").arg(pid.trim()).status();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
                && !self.pid_file().exists()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
    }

    /// Starts it again on the same port, with the same data.
    pub async fn restart(&self) {
        self.stop();
        self.launch().await;
    }

    /// `[directory.<name>]` for this server, looking up the users of `idps`, with `extra`
    /// settings (e.g. `timeout`).
    pub fn gateway_toml(&self, name: &str, idps: &[&str], extra: &str) -> String {
        let secret = self.dir.path().join("bind.secret");
        std::fs::write(&secret, BIND_PASSWORD).unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let idps: Vec<String> = idps.iter().map(|i| format!("\"{i}\"")).collect();
        format!(
            "[directory.{name}]\nurl = \"{}\"\nidps = [{}]\nbind_dn = \"{BIND_DN}\"\n\
             bind_password_file = \"{}\"\nbase_dn = \"ou=people,{BASE}\"\n\
             user_filter = \"(mail={{email}})\"\nattributes = [\"employeeNumber\", \"departmentNumber\"]\n\
             groups_base_dn = \"ou=groups,{BASE}\"\n{extra}\n",
            self.url(),
            idps.join(", "),
            secret.display()
        )
    }
}

impl Drop for TestLdap {
    fn drop(&mut self) {
        self.stop();
    }
}
