//! A real MIT Kerberos realm on loopback for the constrained-delegation tests: Debian's
//! `krb5kdc` on the LDAP database back end (`krb5-kdc-ldap`, in a `slapd` of its own — the
//! DB2 back end cannot store `krbAllowedToDelegateTo`, so constrained delegation needs LDAP),
//! and an Apache backend with `mod_auth_gssapi` that accepts only `Negotiate` and shows the
//! principal it authenticated (`X-Remote-User`).
//!
//! Realm `CORP.EXAMPLE`: users `alice` and `dave` (tickets of 8 s; not `bob`); the gateway's service
//! principal `HTTP/gateway.corp.example` may delegate to `HTTP/intranet.corp.example` only;
//! `HTTP/other.corp.example` exists but is not allowed. Everything lives in one temporary
//! directory; dropping the realm stops its processes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const REALM: &str = "CORP.EXAMPLE";
pub const GATEWAY_PRINCIPAL: &str = "HTTP/gateway.corp.example@CORP.EXAMPLE";
pub const ALLOWED_SPN: &str = "HTTP/intranet.corp.example";
pub const OTHER_SPN: &str = "HTTP/other.corp.example";
const SUFFIX: &str = "dc=corp,dc=example";
const ADMIN_DN: &str = "cn=admin,dc=corp,dc=example";
const ADMIN_PW: &str = "TEST-ONLY-ldap-admin";

/// The running realm and its Kerberos-only backend.
pub struct TestRealm {
    dir: tempfile::TempDir,
    pub ldap_port: u16,
    pub kdc_port: u16,
    /// The Apache backend (`http://127.0.0.1:<port>`), which accepts only Negotiate.
    pub backend_port: u16,
}

fn run(dir: &Path, program: &str, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(program)
        .args(args)
        .env("KRB5_CONFIG", dir.join("krb5.conf"))
        .env("KRB5_KDC_PROFILE", dir.join("kdc.conf"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} runs (./tests/run.sh installs krb5-kdc, krb5-kdc-ldap, krb5-admin-server, apache2, slapd): {e}")
        });
    if let Some(input) = stdin {
        use std::io::Write;
        let _ = child
            .stdin
            .take()
            .map(|mut s| s.write_all(input.as_bytes()));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestRealm {
    /// Builds the realm from nothing and starts slapd, the KDC and Apache.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let ldap_port = super::free_addr().port();
        let kdc_port = super::free_addr().port();
        let backend_port = super::free_addr().port();

        // slapd with the Kerberos schema.
        std::fs::create_dir(d.join("db")).unwrap();
        let schema = Command::new("zcat")
            .arg("/usr/share/doc/krb5-kdc-ldap/kerberos.schema.gz")
            .output()
            .unwrap();
        assert!(
            schema.status.success(),
            "the krb5-kdc-ldap schema is installed"
        );
        std::fs::write(d.join("kerberos.schema"), schema.stdout).unwrap();
        std::fs::write(
            d.join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\ninclude {schema}\npidfile {pid}\n\
                 modulepath /usr/lib/ldap\nmoduleload back_mdb\ndatabase mdb\nsuffix \"{SUFFIX}\"\n\
                 rootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PW}\ndirectory {db}\nmaxsize 10485760\n",
                schema = d.join("kerberos.schema").display(),
                pid = d.join("slapd.pid").display(),
                db = d.join("db").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("seed.ldif"),
            format!("dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: corp\ndc: corp\n\ndn: cn=krb,{SUFFIX}\nobjectClass: organizationalRole\ncn: krb\n"),
        )
        .unwrap();
        let conf = d.join("slapd.conf").display().to_string();
        let seed = d.join("seed.ldif").display().to_string();
        run(&d, "slapadd", &["-f", &conf, "-l", &seed], None);
        let url = format!("ldap://127.0.0.1:{ldap_port}/");
        run(&d, "/usr/sbin/slapd", &["-f", &conf, "-h", &url], None);
        super::wait_for_port(ldap_port, "slapd (kerberos)").await;

        // The realm's configuration, for the KDC and the admin tools.
        std::fs::write(
            d.join("krb5.conf"),
            format!(
                "[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n\
                 rdns = false\n forwardable = true\n udp_preference_limit = 1\n\
                 [realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{kdc_port}\n }}\n\
                 [dbmodules]\n ldapdb = {{\n  db_library = kldap\n  ldap_kerberos_container_dn = cn=krb,{SUFFIX}\n\
                 ldap_kdc_dn = {ADMIN_DN}\n  ldap_kadmind_dn = {ADMIN_DN}\n\
                 ldap_service_password_file = {stash}\n  ldap_servers = ldap://127.0.0.1:{ldap_port}\n }}\n",
                stash = d.join("ldap.stash").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("kdc.conf"),
            format!(
                "[kdcdefaults]\n kdc_listen = 127.0.0.1:{kdc_port}\n kdc_tcp_listen = 127.0.0.1:{kdc_port}\n\
                 [realms]\n {REALM} = {{\n  database_module = ldapdb\n  key_stash_file = {stash}\n\
                 max_life = 10h\n  max_renewable_life = 7d\n }}\n[logging]\n kdc = FILE:{log}\n",
                stash = d.join("master.stash").display(),
                log = d.join("kdc.log").display(),
            ),
        )
        .unwrap();
        // kdb5_ldap_util, bound as the directory's administrator.
        let ldap_util = |args: &[&str], stdin: Option<&str>| {
            let mut all = vec!["-D", ADMIN_DN, "-w", ADMIN_PW];
            all.extend_from_slice(args);
            run(&d, "kdb5_ldap_util", &all, stdin);
        };
        let ldap_stash = d.join("ldap.stash").display().to_string();
        ldap_util(
            &["stashsrvpw", "-f", &ldap_stash, ADMIN_DN],
            Some(&format!("{ADMIN_PW}\n{ADMIN_PW}\n")),
        );
        let ldap_url = format!("ldap://127.0.0.1:{ldap_port}");
        ldap_util(
            &[
                "-H",
                &ldap_url,
                "create",
                "-subtrees",
                SUFFIX,
                "-r",
                REALM,
                "-s",
                "-P",
                "TEST-ONLY-master",
            ],
            None,
        );
        let kadmin = |query: &str| run(&d, "kadmin.local", &["-q", query], None);
        kadmin("addprinc -pw TEST-ONLY-alice alice");
        // Dave's tickets last 8 s, so the renewal is seen in a test.
        kadmin("addprinc -maxlife \"8 seconds\" -pw TEST-ONLY-dave dave");
        kadmin("addprinc -randkey +ok_to_auth_as_delegate HTTP/gateway.corp.example");
        kadmin(&format!("addprinc -randkey {ALLOWED_SPN}"));
        kadmin(&format!("addprinc -randkey {OTHER_SPN}"));
        kadmin(&format!(
            "ktadd -k {} HTTP/gateway.corp.example",
            d.join("gateway.keytab").display()
        ));
        kadmin(&format!(
            "ktadd -k {} {ALLOWED_SPN} {OTHER_SPN}",
            d.join("backend.keytab").display()
        ));
        allow_delegation(ldap_port, ALLOWED_SPN).await;

        let realm = Self {
            dir,
            ldap_port,
            kdc_port,
            backend_port,
        };
        realm.start_kdc().await;
        realm.start_backend().await;
        realm
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the KDC (again).
    pub async fn start_kdc(&self) {
        let pid = self.path("kdc.pid").display().to_string();
        run(self.dir.path(), "krb5kdc", &["-P", &pid], None);
        super::wait_for_port(self.kdc_port, "krb5kdc").await;
    }

    /// Stops the KDC: its port refuses connections.
    pub fn stop_kdc(&self) {
        stop_by_pid_file(&self.path("kdc.pid"));
    }

    async fn start_backend(&self) {
        std::fs::create_dir(self.path("www")).unwrap();
        std::fs::write(self.path("www/index.html"), "kerberos backend\n").unwrap();
        std::fs::write(
            self.path("httpd.conf"),
            format!(
                "ServerRoot {root}\nPidFile {root}/httpd.pid\nErrorLog {root}/httpd-error.log\n\
                 Listen 127.0.0.1:{port}\nServerName intranet.corp.example\n\
                 LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
                 LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
                 LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so\n\
                 LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so\n\
                 LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so\n\
                 LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so\nDirectoryIndex index.html\n\
                 LoadModule auth_gssapi_module /usr/lib/apache2/modules/mod_auth_gssapi.so\n\
                 DocumentRoot {root}/www\nLogLevel info\n\
                 <Location />\n  AuthType GSSAPI\n  AuthName \"Kerberos\"\n\
                 GssapiCredStore keytab:{root}/backend.keytab\n  GssapiAllowedMech krb5\n\
                 Require valid-user\n  Header always set X-Remote-User \"expr=%{{REMOTE_USER}}\"\n</Location>\n",
                root = self.dir.path().display(),
                port = self.backend_port,
            ),
        )
        .unwrap();
        let conf = self.path("httpd.conf").display().to_string();
        run(
            self.dir.path(),
            "apache2",
            &["-f", &conf, "-k", "start"],
            None,
        );
        super::wait_for_port(self.backend_port, "apache2 (mod_auth_gssapi)").await;
    }

    /// The backend's URL.
    pub fn backend_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.backend_port)
    }

    /// The gateway's `[kerberos]` section (its own krb5.conf is written from realm and kdcs).
    pub fn gateway_toml(&self, extra: &str) -> String {
        format!(
            "\n[kerberos]\nprincipal = \"{GATEWAY_PRINCIPAL}\"\nkeytab_file = \"{}\"\nrealm = \"{REALM}\"\n\
             kdcs = [\"127.0.0.1:{}\"]\n{extra}",
            self.path("gateway.keytab").display(),
            self.kdc_port
        )
    }

    /// What the KDC logged.
    pub fn kdc_log(&self) -> String {
        std::fs::read_to_string(self.path("kdc.log")).unwrap_or_default()
    }
}

/// Lets the gateway's principal delegate to `spn` (`krbAllowedToDelegateTo`, what AD calls
/// `msDS-AllowedToDelegateTo`).
async fn allow_delegation(ldap_port: u16, spn: &str) {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&format!("ldap://127.0.0.1:{ldap_port}"))
        .await
        .unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(ADMIN_DN, ADMIN_PW)
        .await
        .unwrap()
        .success()
        .unwrap();
    let dn = format!("krbPrincipalName={GATEWAY_PRINCIPAL},cn={REALM},cn=krb,{SUFFIX}");
    let target = format!("{spn}@{REALM}");
    ldap.modify(
        &dn,
        vec![ldap3::Mod::Add(
            "krbAllowedToDelegateTo",
            std::collections::HashSet::from([target.as_str()]),
        )],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let _ = ldap.unbind().await;
}

fn stop_by_pid_file(file: &Path) {
    let Ok(pid) = std::fs::read_to_string(file) else {
        return;
    };
    let pid = pid.trim().to_string();
    let _ = Command::new("kill").arg(&pid).status();
    for _ in 0..200 {
        let alive = Command::new("kill")
            .args(["-0", &pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !alive {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(file);
}

impl Drop for TestRealm {
    fn drop(&mut self) {
        stop_by_pid_file(&self.path("httpd.pid"));
        stop_by_pid_file(&self.path("kdc.pid"));
        stop_by_pid_file(&self.path("slapd.pid"));
    }
}
