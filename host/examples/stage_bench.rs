//! What each stage of a request costs on its own (run by `scripts/bench` after the proxy
//! rows): verifying the agent's signature and re-signing (sigward's header-form path and
//! aws-sigv4 alone), understanding the call, and judging it with one allow policy in a
//! fresh sandbox. One thread, the benchmark's request, mean over 20,000 runs each.

/// The same allocator as the sigward binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use sigward::aws::request::Request;
use sigward::aws::scope::Scope;
use sigward::aws::sigv4::{
    Outgoing, Signer, SigningCredentials, resign, resign_with, verify, verify_with,
};

fn time<F: FnMut()>(name: &str, n: u32, mut f: F) {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name:<34} {:>6.2} µs",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}

fn main() -> anyhow::Result<()> {
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let headers = [
        ("host", "127.0.0.1:4443"),
        (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
    ];
    let agent = SigningCredentials {
        access_key_id: "AKIA111111111111XXXX".into(),
        secret_access_key: "bench-agent-secret".into(),
        session_token: None,
    };
    let now = SystemTime::now();
    let out = Outgoing {
        method: "POST",
        uri: "/",
        headers: &headers,
        payload_hash: None,
        body: body.as_bytes(),
        presign: None,
    };
    let signed = resign(&out, "sts", "us-east-1", &agent, now)?;
    let mut raw = String::from("POST / HTTP/1.1\r\n");
    for (n, v) in headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .chain(signed.headers.clone())
    {
        raw += &format!("{n}: {v}\r\n");
    }
    raw += &format!("content-length: {}\r\n\r\n{body}", body.len());
    let request = Request::parse(raw.as_bytes())?;
    let scope = Scope::of(&request)?.ok_or_else(|| anyhow::anyhow!("not signed"))?;
    verify(&request, &scope, "bench-agent-secret", now)?;
    let n = 20000;
    time("verify (sigward)", n, || {
        verify(&request, &scope, "bench-agent-secret", now).expect("stage");
    });
    let role = SigningCredentials {
        access_key_id: "ASIABENCHROLEKEY0000".into(),
        secret_access_key: "bench-role-secret".into(),
        session_token: Some("bench-token".into()),
    };
    // Both implementations sign alike before either is timed.
    let a = resign_with(Signer::AwsSigv4, &out, "sts", "us-east-1", &role, now)?;
    let b = resign(&out, "sts", "us-east-1", &role, now)?;
    assert_eq!(a, b);
    time("verify (aws-sigv4 alone)", n, || {
        verify_with(
            Signer::AwsSigv4,
            &request,
            &scope,
            "bench-agent-secret",
            now,
        )
        .expect("stage");
    });
    time("re-sign (aws-sigv4 alone)", n, || {
        resign_with(Signer::AwsSigv4, &out, "sts", "us-east-1", &role, now).expect("stage");
    });
    time("re-sign (sigward)", n, || {
        resign(&out, "sts", "us-east-1", &role, now).expect("stage");
    });
    let names = Default::default();
    time("understand", n, || {
        sigward::aws::understand_call(&request, &names).expect("stage");
    });
    let (facet, _) = sigward::aws::understand_call(&request, &names)?;
    let engine = sigward::policy::engine::Engine::new(Default::default())?;
    let policy = engine.load(&sigward::policy::module::ModuleRef::parse(
        "builtin:no-secrets",
    ))?;
    let set = sigward::policy::set::PolicySet::new(
        "bench",
        vec![sigward::policy::set::Entry {
            policy: Arc::clone(&policy),
            settings: Arc::from("{}"),
        }],
        Default::default(),
    );
    time("judge: one policy, fresh sandbox", n, || {
        let j = set.judge(&facet);
        assert!(matches!(j.verdict, sigward::policy::Verdict::Allow));
    });
    Ok(())
}
