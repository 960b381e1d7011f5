//! High availability with real parts: three gateway nodes on 127.0.0.2–4 behind HAProxy
//! round-robin without stickiness, sharing sessions through Redis (a master, a replica and
//! Sentinel, Debian's packages), signing in at the real test IdPs. One test walks through the
//! cases in order so the servers start once: a login begun on one node and finished on
//! another (OIDC callback and SAML ACS); every node serving the session; a used code and a used
//! SAML response refused at another node; nothing readable in what Redis stores; a logout on
//! one node refused everywhere within a second; a node SIGKILLed under load; the Redis
//! primary killed (Sentinel promotes the replica; the 503 window is printed); Redis fully down
//! (503 pages, no bypass) and back (no restart needed). A second test runs the session
//! lifecycle across two nodes: one refresh for a session both nodes use at once, refreshed
//! groups deciding on every node, a back-channel logout and an admin's revocation honoured
//! by the node that did not receive them.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::browser::Browser;
use support::ha::{Haproxy, RedisServer, Sentinel};
use support::idp::{IdpClient, TestIdp};
use support::saml_idp::TestSamlIdp;
use support::{dev_cert, echo_backend, free_addr, header_values, GatewaySpec, RunningGateway};

const WIKI: &str = "wiki.localhost";
/// An app signing in with SAML (and accepting IdP-initiated logins, so a replayed response has
/// only the replay cache to stop it).
const DOCS: &str = "docs.localhost";

fn at(last_octet: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)), port)
}

/// A port free on 127.0.0.1–4 alike (HAProxy and the three nodes share it, as one public
/// `host:port` that every node answers for).
fn shared_port() -> u16 {
    loop {
        let port = free_addr().port();
        let free = (1..=4).all(|o| std::net::TcpListener::bind(at(o, port)).is_ok());
        if free {
            return port;
        }
    }
}

fn docs_policy(upstream: &str) -> String {
    let head = support::policy_head("docs", DOCS, upstream, Some("corp-saml"));
    format!(
        "{head}allow_idp_initiated = true\n[identity.headers]\n\"X-Remote-User\" = \"email\"\n\n\
         [[allow]]\nid = \"staff\"\nwhy = \"staff\"\ngroups = [\"staff\"]\n"
    )
}

fn policy(upstream: &str) -> String {
    let head = support::policy_head("wiki", WIKI, upstream, Some("corp"));
    format!(
        "{head}\n[identity.headers]\n\"X-Remote-User\" = \"email\"\n\n\
         [[allow]]\nid = \"public\"\nwhy = \"status page\"\npublic = true\npaths = [\"/public/**\"]\n\n\
         [[allow]]\nid = \"staff\"\nwhy = \"staff\"\ngroups = [\"staff\"]\n"
    )
}

/// A client that reaches the wiki at `addr`, sending `cookie`, as an API call (no page
/// navigation, so an anonymous request gets 401, not a redirect).
fn api_client(addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(WIKI, addr)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A client that reaches `host` at `addr`.
fn api_client_for(addr: SocketAddr, host: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, addr)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// (status, the user the backend saw) for one request, or `None` if the request failed.
async fn fetch(client: &reqwest::Client, url: &str, cookie: &str) -> Option<(u16, String)> {
    let response = client.get(url).header("cookie", cookie).send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let user = serde_json::from_str(&body)
        .ok()
        .and_then(|json| header_values(&json, "x-remote-user").into_iter().next())
        .unwrap_or_default();
    Some((status, if status == 200 { user } else { body }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_sessions_through_redis_and_survive_failures() {
    let port = shared_port();
    let wiki = |path: &str| format!("http://{WIKI}:{port}{path}");
    let (master_port, replica_port, sentinel_port) =
        (free_addr().port(), free_addr().port(), free_addr().port());
    let mut master = RedisServer::master(master_port).await;
    let replica = RedisServer::replica(replica_port, master_port).await;
    let linked = Instant::now() + Duration::from_secs(10);
    while !replica
        .info("replication")
        .await
        .contains("master_link_status:up")
    {
        assert!(
            Instant::now() < linked,
            "the replica never linked to its master"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sentinel = Sentinel::start(sentinel_port, master_port).await;
    let client = IdpClient::gateway("portcullis", &[format!("http://{WIKI}:{port}")]);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let backend = echo_backend("wiki").await;
    let docs = echo_backend("docs").await;
    let saml_idp =
        TestSamlIdp::start(&[format!("http://{DOCS}:{port}/.portcullis/saml/metadata")]).await;
    let store = format!(
        "[sessions]\ncookie_key_file = \"{}\"\n\
         [sessions.redis]\nsentinels = [\"redis://127.0.0.1:{sentinel_port}\"]\nmaster = \"portcullis\"\ntimeout = \"1s\"\nl1_ttl = \"60s\"\n",
        dev_cert("cookie.key").display()
    );
    let mut nodes: Vec<RunningGateway> = Vec::new();
    for octet in 2..=4 {
        nodes.push(
            GatewaySpec::new()
                .http_addr(at(octet, port))
                .gateway_toml(&idp.gateway_toml("corp", &client, ""))
                .gateway_toml(&saml_idp.gateway_toml("corp-saml", ""))
                .gateway_toml(&store)
                .policy("wiki.toml", policy(&backend.url()))
                .policy("docs.toml", docs_policy(&docs.url()))
                .start()
                .await,
        );
    }
    let node = |i: usize| nodes[i].http;
    let haproxy = Haproxy::start(
        at(1, port),
        &nodes.iter().map(|n| (n.http, n.admin)).collect::<Vec<_>>(),
    )
    .await;
    let up = Instant::now();
    while fetch(&api_client(haproxy.addr), &wiki("/public/status"), "")
        .await
        .map(|s| s.0)
        != Some(200)
    {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "HAProxy never saw a healthy node:\n{}",
            haproxy.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // --- a login begun on node 1 finishes on node 2; every node serves the session ---------
    let first = Browser::new(node(0), &[WIKI]);
    let form = first.follow(&wiki("/")).await;
    assert!(form.is_login_form(), "node 1 sends the browser to the IdP");
    let callback = first.sign_in_stop_at_callback(&form).await;
    let with_login_cookie = first.cookies_for(&wiki("/"));
    let landed = first.via(node(1), &[WIKI]).follow(&callback).await;
    assert_eq!(
        landed.status, 200,
        "node 2 finished node 1's login: {landed:?}"
    );
    assert_eq!(
        header_values(&landed.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
    let alice = first.cookies_for(&wiki("/"));
    for i in 0..3 {
        let seen = fetch(&api_client(node(i)), &wiki("/"), &alice).await;
        assert_eq!(
            seen,
            Some((200, "alice@corp.example".into())),
            "node {} serves the session",
            i + 1
        );
    }
    // What Redis was sent and keeps shows no identity, and no key names the session.
    let persisted = master.persisted_bytes();
    assert!(
        persisted.len() > 100,
        "the append-only file records the writes"
    );
    for secret in [&b"alice"[..], b"corp.example", b"staff"] {
        assert!(
            !persisted.windows(secret.len()).any(|w| w == secret),
            "Redis holds `{}` in the clear",
            String::from_utf8_lossy(secret)
        );
    }
    // The same code and state, presented at node 3 with the login cookie: refused.
    let replayed = api_client(node(2))
        .get(&callback)
        .header("cookie", &with_login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        replayed.status(),
        400,
        "a used callback is refused at another node"
    );
    assert!(
        !replayed.headers().contains_key("set-cookie")
            || !replayed.headers().get_all("set-cookie").iter().any(|c| c
                .to_str()
                .unwrap_or("")
                .contains("portcullis_session=")
                && !c.to_str().unwrap_or("").contains("Max-Age=0")),
        "no session from a replayed callback"
    );

    // --- SAML: the AuthnRequest from node 1, the response posted to node 2's ACS ------------
    let saml = Browser::new(node(0), &[DOCS]);
    let form = saml.follow(&format!("http://{DOCS}:{port}/")).await;
    let posted = saml.sign_in(&form, "alice", "alice-pw").await;
    assert!(
        posted.body.contains("SAMLResponse"),
        "the IdP's auto-POST page: {posted:?}"
    );
    let landed = saml.via(node(1), &[DOCS]).auto_post(&posted).await;
    assert_eq!(
        landed.status, 200,
        "node 2's ACS finished node 1's SAML login: {landed:?}"
    );
    assert_eq!(
        header_values(&landed.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
    // An IdP-initiated response (the IdP's own signing code) used at node 1, then at node 3:
    // only the shared replay cache stands in the way.
    let sp = format!("http://{DOCS}:{port}/.portcullis/saml/metadata");
    let (_, response) = saml_idp
        .forge(serde_json::json!({ "sp": sp, "user": "alice" }))
        .await;
    let acs = format!("http://{DOCS}:{port}/.portcullis/saml/acs");
    let first_use = api_client_for(node(0), DOCS)
        .post(&acs)
        .form(&[("SAMLResponse", response.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        first_use.status(),
        302,
        "the IdP-initiated login works once"
    );
    let replayed = api_client_for(node(2), DOCS)
        .post(&acs)
        .form(&[("SAMLResponse", response.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        replayed.status(),
        400,
        "a used SAML response is refused at another node"
    );
    nodes[2].wait_for_log("was already used (replay)").await;

    // --- a logout on node 1: every node refuses the cookie within a second ---------------
    for i in 0..3 {
        // Each node now holds the session in its L1.
        assert_eq!(
            fetch(&api_client(node(i)), &wiki("/"), &alice)
                .await
                .map(|s| s.0),
            Some(200)
        );
    }
    for (i, other) in nodes.iter().enumerate().skip(1) {
        let ready = reqwest::get(format!("http://{}/readyz", other.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            ready.contains("L1 on, ") && !ready.contains("L1 on, 0 sessions"),
            "node {} caches the session: {ready}\n{}",
            i + 1,
            other.logs()
        );
    }
    let logout = api_client(node(0))
        .get(wiki("/.portcullis/logout"))
        .header("cookie", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 302);
    let logged_out = Instant::now();
    let mut refused = [false; 3];
    while !refused.iter().all(|r| *r) {
        for (i, done) in refused.iter_mut().enumerate() {
            if !*done {
                *done = fetch(&api_client(node(i)), &wiki("/"), &alice)
                    .await
                    .map(|s| s.0)
                    == Some(401);
            }
        }
        assert!(
            logged_out.elapsed() < Duration::from_secs(1),
            "nodes still honour a logged-out session after 1 s: refused = {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "logout on node 1 refused on every node after {} ms",
        logged_out.elapsed().as_millis()
    );

    // --- SIGKILL a node under load: only its in-flight requests fail ---------------------
    let through_lb = Browser::new(haproxy.addr, &[WIKI]);
    let trip = through_lb.login(&wiki("/"), "bob", "bob-pw").await;
    assert_eq!(trip.status, 200, "sign-in through HAProxy: {trip:?}");
    let bob = Arc::new(through_lb.cookies_for(&wiki("/")));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, signed_out) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    const WORKERS: usize = 6;
    let mut load = Vec::new();
    for _ in 0..WORKERS {
        let (stop, ok, failed, signed_out, bob) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            signed_out.clone(),
            bob.clone(),
        );
        let url = wiki("/");
        load.push(tokio::spawn(async move {
            let client = api_client(at(1, port));
            while !stop.load(Ordering::Relaxed) {
                match fetch(&client, &url, &bob).await {
                    Some((200, user)) if user == "bob@corp.example" => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    Some((401 | 302, _)) => signed_out.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    nodes[2].signal("KILL");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed, signed_out) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        signed_out.load(Ordering::Relaxed),
    );
    println!("SIGKILL of node 3 under load: {ok} ok, {failed} failed, {signed_out} signed out");
    assert_eq!(signed_out, 0, "nobody signs in again when a node dies");
    assert!(
        failed <= WORKERS,
        "only requests in flight on the killed node may fail: {failed}"
    );
    assert!(ok > 50, "the other nodes kept serving: {ok}");

    // --- kill the Redis primary: Sentinel promotes the replica, sessions survive ----------
    let lb = api_client(haproxy.addr);
    let killed = Instant::now();
    master.kill();
    let (mut first_503, mut last_503) = (None, None);
    loop {
        match fetch(&lb, &wiki("/"), &bob).await {
            Some((200, user)) => {
                assert_eq!(user, "bob@corp.example");
                if first_503.is_some() {
                    break;
                }
            }
            Some((503, body)) => {
                assert!(
                    body.contains("temporarily unavailable"),
                    "the 503 page: {body}"
                );
                first_503.get_or_insert_with(Instant::now);
                last_503 = Some(Instant::now());
            }
            other => {
                panic!("during the failover a request got {other:?}: a bypass or a lost session")
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no recovery 20 s after the primary died; sentinel:\n{}",
            sentinel.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let window = last_503
        .zip(first_503)
        .map_or(0, |(l, f)| l.duration_since(f).as_millis());
    println!(
        "Redis primary killed: 503s for {window} ms, sessions served again after {} ms",
        killed.elapsed().as_millis()
    );
    assert_eq!(
        sentinel.master_port().await,
        Some(replica_port),
        "the replica was promoted"
    );

    // --- Redis fully down: 503 pages, public paths serve, no bypass; back without restart --
    let mut promoted = replica;
    promoted.kill();
    let down = Instant::now();
    loop {
        match fetch(&lb, &wiki("/"), &bob).await {
            Some((503, _)) => break,
            Some((200, _)) => {}
            other => panic!("with Redis down a request got {other:?}"),
        }
        assert!(
            down.elapsed() < Duration::from_secs(5),
            "no 503 with Redis down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let public = fetch(&lb, &wiki("/public/status"), "").await;
    assert_eq!(public.map(|p| p.0), Some(200), "public routes keep serving");
    let anonymous = Browser::new(haproxy.addr, &[WIKI]).get(&wiki("/")).await;
    assert_eq!(
        anonymous.status(),
        503,
        "no sign-in that could not be kept, no anonymous pass"
    );
    let ready = reqwest::get(format!("http://{}/readyz", nodes[0].admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ready.contains("session store (redis sentinel): unreachable"),
        "{ready}"
    );
    // The metrics say so too: calls timed, the failures counted, the L1 used before.
    let metrics = support::prometheus::scrape(nodes[0].admin).await;
    let value = |series: &str| support::prometheus::sample(&metrics, series).unwrap_or(0.0);
    assert!(
        value(r#"portcullis_session_store_duration_seconds_count{store="redis"}"#) > 0.0,
        "{metrics}"
    );
    assert!(
        value(r#"portcullis_session_store_errors_total{store="redis"}"#) > 0.0,
        "{metrics}"
    );
    assert!(
        value(r#"portcullis_session_store_l1_total{result="hit"}"#) > 0.0,
        "{metrics}"
    );
    let promoted = promoted.restart_as_master().await;
    let back = Instant::now();
    loop {
        if let Some((200, user)) = fetch(&lb, &wiki("/"), &bob).await {
            assert_eq!(user, "bob@corp.example", "the same session, after recovery");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "not recovered 15 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "Redis back: sessions served again after {} ms",
        back.elapsed().as_millis()
    );
    assert!(promoted.dbsize().await > 0);
    drop(haproxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_back_channel_logout_and_revocation_reach_every_node() {
    let port = shared_port();
    let wiki = |path: &str| format!("http://{WIKI}:{port}{path}");
    let redis_port = free_addr().port();
    let _redis = RedisServer::master(redis_port).await;
    // The IdP's back-channel logouts go to node 2 only.
    let client = IdpClient::gateway("portcullis", &[format!("http://{WIKI}:{port}")])
        .with_refresh()
        .with_backchannel_logout(
            &format!("http://{}/.portcullis/oidc/backchannel-logout", at(3, port)),
            true,
        );
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let backend = echo_backend("wiki").await;
    let store = format!(
        "[sessions]\ncookie_key_file = \"{}\"\n\
         [sessions.redis]\nurl = \"redis://127.0.0.1:{redis_port}\"\ntimeout = \"1s\"\nl1_ttl = \"60s\"\n",
        dev_cert("cookie.key").display()
    );
    let mut nodes: Vec<RunningGateway> = Vec::new();
    for octet in 2..=3 {
        nodes.push(
            GatewaySpec::new()
                .http_addr(at(octet, port))
                .admin_token("admin-token-TEST-ONLY-0123456789abcdef0123456789")
                .gateway_toml(&idp.gateway_toml(
                    "corp",
                    &client,
                    "refresh = true\nrefresh_interval = \"1s\"\n\
                     [idp.corp.universal_logout]\naudience = \"https://gateway.test/gtr\"\n",
                ))
                .gateway_toml(&store)
                .policy("wiki.toml", policy(&backend.url()))
                .start()
                .await,
        );
    }
    let node = |i: usize| nodes[i].http;
    let alice_browser = Browser::new(node(0), &[WIKI]);
    assert_eq!(
        alice_browser
            .login(&wiki("/"), "alice", "alice-pw")
            .await
            .status,
        200
    );
    let alice = alice_browser.cookies_for(&wiki("/"));
    let bob_browser = Browser::new(node(0), &[WIKI]);
    assert_eq!(
        bob_browser.login(&wiki("/"), "bob", "bob-pw").await.status,
        200
    );
    let bob = bob_browser.cookies_for(&wiki("/"));
    for i in 0..2 {
        assert_eq!(
            fetch(&api_client(node(i)), &wiki("/"), &alice).await,
            Some((200, "alice@corp.example".into()))
        );
    }

    // --- claims due: both nodes get requests at once, the IdP sees one refresh -------------
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (refreshed_before, _) = idp.refresh_counts().await;
    let burst: Vec<_> = (0..6)
        .map(|i| {
            let (client, url, cookie) = (api_client(node(i % 2)), wiki("/"), alice.clone());
            tokio::spawn(async move { fetch(&client, &url, &cookie).await })
        })
        .collect();
    for request in burst {
        assert_eq!(
            request.await.unwrap(),
            Some((200, "alice@corp.example".into()))
        );
    }
    let (refreshed, refused) = idp.refresh_counts().await;
    assert_eq!(
        (refreshed - refreshed_before, refused),
        (1, 0),
        "one refresh for one session, whichever node asked:\n{}\n{}",
        nodes[0].logs(),
        nodes[1].logs()
    );

    // --- a group removal: denied on both nodes once one of them has refreshed --------------
    idp.set_groups("alice", &["finance"]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        fetch(&api_client(node(0)), &wiki("/"), &alice)
            .await
            .map(|s| s.0),
        Some(403)
    );
    assert_eq!(
        fetch(&api_client(node(1)), &wiki("/"), &alice)
            .await
            .map(|s| s.0),
        Some(403),
        "node 2 uses node 1's refresh at once"
    );

    // --- alice signs out at the IdP; node 2 gets the back-channel logout, node 1 obeys ----
    let form = alice_browser
        .follow(&format!("{}/session/end", idp.issuer))
        .await;
    alice_browser.confirm_logout(&form).await;
    nodes[1].wait_for_log("back-channel logout").await;
    let gone = Instant::now() + Duration::from_secs(1);
    while fetch(&api_client(node(0)), &wiki("/"), &alice)
        .await
        .map(|s| s.0)
        != Some(401)
    {
        assert!(
            Instant::now() < gone,
            "node 1 still honours alice's session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // --- an admin revokes bob through node 2; node 1 refuses him ---------------------------
    assert_eq!(
        fetch(&api_client(node(0)), &wiki("/"), &bob).await,
        Some((200, "bob@corp.example".into()))
    );
    let (ok, out) = support::sessions_cli(
        &nodes[1].config_path(),
        &["revoke", "--user", "bob@corp.example"],
    )
    .await;
    assert!(ok && out.contains("revoked 1 session(s)"), "{out}");
    let gone = Instant::now() + Duration::from_secs(1);
    while fetch(&api_client(node(0)), &wiki("/"), &bob)
        .await
        .map(|s| s.0)
        != Some(401)
    {
        assert!(Instant::now() < gone, "node 1 still honours bob's session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // --- Okta Universal Logout for carol reaches node 2; node 1 refuses her -----------------
    idp.set_groups("carol", &["staff"]).await;
    let carol_browser = Browser::new(node(0), &[WIKI]);
    assert_eq!(
        carol_browser
            .login(&wiki("/"), "carol", "carol-pw")
            .await
            .status,
        200
    );
    let carol = carol_browser.cookies_for(&wiki("/"));
    let now = support::unix_now();
    let jwt = idp
        .sign(
            serde_json::json!({}),
            serde_json::json!({ "iss": idp.issuer, "aud": "https://gateway.test/gtr",
                                "iat": now, "exp": now + 300, "jti": "ha-gtr-1" }),
        )
        .await;
    let status = support::http_client()
        .post(format!(
            "http://{}/.portcullis/global-token-revocation",
            node(1)
        ))
        .header("authorization", format!("Bearer {jwt}"))
        .header("content-type", "application/json")
        .body(r#"{"sub_id":{"format":"email","email":"carol@contractors.corp.example"}}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let gone = Instant::now() + Duration::from_secs(1);
    while fetch(&api_client(node(0)), &wiki("/"), &carol)
        .await
        .map(|s| s.0)
        != Some(401)
    {
        assert!(
            Instant::now() < gone,
            "node 1 still honours carol's session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
