//! Fuzzing the request parser and facet builder with proptest: arbitrary bytes, and the
//! real captured requests mutated (bytes flipped, cut, spliced, headers duplicated).
//! Whatever arrives, understanding it must not panic, and nothing it produces may grow
//! beyond its bounds (a body at most `MAX_UNDERSTOOD_BODY`, at most `MAX_PARAMS` bounded params).

use proptest::prelude::*;
use sigward::aws::account::AccountNames;
use sigward::aws::request::{MAX_UNDERSTOOD_BODY, Request, Unread};
use sigward::aws::{MAX_PARAM_VALUE, MAX_PARAMS, understand_bytes};

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    let mut requests: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    requests.sort();
    requests
}

fn check(bytes: &[u8]) {
    if let Ok(request) = Request::parse(bytes) {
        assert!(
            request.body.len() <= MAX_UNDERSTOOD_BODY.max(bytes.len()),
            "body grew to {}",
            request.body.len()
        );
    }
    if let Ok(facet) = understand_bytes(bytes, &AccountNames::default()) {
        assert!(facet.params.len() <= MAX_PARAMS);
        assert!(
            facet
                .params
                .iter()
                .all(|(k, v)| k.len() <= MAX_PARAM_VALUE && v.len() <= MAX_PARAM_VALUE)
        );
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    DuplicateHead(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::DuplicateHead),
        (
            any::<usize>(),
            prop::sample::select(vec![
                b"\r\n".to_vec(),
                b"Transfer-Encoding: chunked\r\n".to_vec(),
                b"Content-Encoding: gzip\r\n".to_vec(),
                b"Content-Length: 18446744073709551615\r\n".to_vec(),
                b"ffffffffffffffff\r\n".to_vec(),
                b"X-Amz-Target: .\r\n".to_vec(),
                b"%ff%00/..%2f".to_vec(),
                b"Host: a.s3.amazonaws.com\r\n".to_vec(),
            ])
        )
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip(at, b) => {
                if !bytes.is_empty() {
                    let i = at % len;
                    bytes[i] ^= b;
                }
            }
            Mutation::Cut(at) => bytes.truncate(at % len),
            Mutation::Insert(at, more) => {
                let i = at % (bytes.len() + 1);
                bytes.splice(i..i, more.iter().copied());
            }
            Mutation::DuplicateHead(at) => {
                let line_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
                let i = at % (bytes.len() + 1);
                let head: Vec<u8> = bytes[..line_end].to_vec();
                bytes.splice(i..i, head);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn mutated_real_requests_never_panic(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let requests = corpus();
        let original = requests[pick.index(requests.len())].clone();
        check(&apply(original, &mutations));
    }
}

#[test]
fn lying_lengths_do_not_allocate() {
    // A request that claims far more body than it has.
    // Its body is not read (and not judged as if it were the three bytes that came).
    let bytes = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\nabc";
    let request = Request::parse(bytes).expect("parse");
    assert!(request.body.is_empty());
    assert!(matches!(
        request.unread,
        Some(Unread::Truncated { got: 3, .. })
    ));
    let bytes =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffff\r\nabc";
    assert!(Request::parse(bytes).is_err());
}
