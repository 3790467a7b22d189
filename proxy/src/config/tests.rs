//! The config's defaults and errors (each names the file, the line and the
//! field): `sections` for limits, timeouts and tls, `key_sources` for key.

use std::path::Path;

use super::*;
use crate::identity::Algorithm;
use crate::key::{KeySource, PathTemplate, TokenAt};

mod sections {
    use super::*;

    /// A valid config (7 lines) followed by `extra`.
    fn with(extra: &str) -> String {
        format!(
            "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:9090\nhash_seed: \"t\"\n\
             key:\n  sources: [{{header: x-user-id}}]\n\
             workers:\n  - {{id: w1, addr: 127.0.0.1:9001}}\n{extra}"
        )
    }

    fn parse(text: &str) -> Result<ProxyConfig, ConfigError> {
        Loaded::parse(Path::new("proxy.yaml"), text).map(|loaded| loaded.config)
    }

    /// Assert `extra` is refused at `line`, naming `field`, saying `why`.
    fn assert_refused(extra: &str, line: u64, field: &str, why: &str) {
        let error = parse(&with(extra)).expect_err(extra);
        assert_eq!((error.line, error.field.as_str()), (line, field), "{error}");
        assert!(error.message.contains(why), "{error}");
    }

    #[test]
    fn suspect_after_ms_is_above_zero_and_under_the_upstream_timeout() {
        let config = parse(&with("")).expect("valid");
        assert_eq!(
            (config.suspect_after_ms, config.upstream_timeout_ms),
            (300, 5000)
        );
        let why = "less than upstream_timeout_ms";
        assert_refused("suspect_after_ms: 0\n", 8, "suspect_after_ms", why);
        let over = "upstream_timeout_ms: 500\nsuspect_after_ms: 500\n";
        assert_refused(over, 9, "suspect_after_ms", why);
    }

    #[test]
    fn absent_sections_take_the_documented_defaults() {
        let config = parse(&with("")).expect("valid");
        let limits = &config.limits;
        assert_eq!(
            (
                limits.max_header_bytes.value,
                limits.max_headers.value,
                limits.max_key_bytes.value,
                limits.max_body_bytes.value,
            ),
            (16_384, 100, 256, 1_048_576)
        );
        assert_eq!(
            (limits.rate.per_s.value, limits.rate.burst.value),
            (100, 200)
        );
        let t = &config.timeouts;
        assert_eq!(
            (
                t.header_read_ms.value,
                t.body_idle_ms.value,
                t.keepalive_idle_ms.value,
                t.write_ms.value,
            ),
            (10_000, 30_000, 60_000, 30_000)
        );
        assert!(config.tls.is_none());
        let partial = parse(&with("limits: {rate: {per_s: 0}}\n")).expect("valid");
        assert_eq!(
            partial.limits.rate.burst.value, 200,
            "unwritten fields keep defaults"
        );
    }

    #[test]
    fn out_of_range_values_are_refused_where_written() {
        assert_refused("limits: {max_headers: 300}\n", 8, "max_headers", "worker");
        assert_refused("limits: {max_headers: 2}\n", 8, "max_headers", "worker");
        assert_refused(
            "limits:\n  max_header_bytes: 0\n",
            9,
            "max_header_bytes",
            "1..=",
        );
        assert_refused(
            "limits:\n  rate: {per_s: 10, burst: 0}\n",
            9,
            "burst",
            "1 to a million",
        );
        assert_refused(
            "timeouts: {body_idle_ms: 0}\n",
            8,
            "body_idle_ms",
            "at least 1 ms",
        );
        assert_refused(
            "limits: {max_key_bytes: 20000}\n",
            8,
            "max_key_bytes",
            "forwarded in a header",
        );
    }

    #[test]
    fn a_default_that_no_longer_fits_is_refused_at_its_section() {
        // max_key_bytes (256 by default) cannot exceed max_header_bytes.
        assert_refused(
            "limits: {max_header_bytes: 100}\n",
            8,
            "limits.max_key_bytes",
            "1..=100",
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert_refused(
            "limits:\n  max_bdy_bytes: 1\n",
            9,
            "max_bdy_bytes",
            "unknown field",
        );
        assert_refused("timeouts:\n  idle_ms: 1\n", 9, "idle_ms", "unknown field");
    }

    #[test]
    fn the_discovery_store_is_checked_as_the_discovery_loads_it() {
        assert_refused(
            "discovery:\n  store: \"postgres://u:s3cret@db/roost?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem\"\n",
            9,
            "store",
            "sslrootcert /nonexistent/ca.pem: cannot read",
        );
        let error = parse(&with(
            "discovery:\n  store: \"postgres://u:s3cret@db/roost?sslmode=sometimes\"\n",
        ))
        .expect_err("an unknown sslmode");
        assert!(error.message.contains("sslmode"), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        parse(&with(
            "discovery:\n  store: \"postgres://u@db/roost?sslmode=disable\"\n",
        ))
        .expect("a plain Postgres store");
    }

    #[test]
    fn the_tls_listener_must_be_its_own_and_its_files_must_load() {
        assert_refused(
            "tls: {listen: 127.0.0.1:8080, cert: a.pem, key: b.pem}\n",
            8,
            "listen",
            "must differ",
        );
        assert_refused(
            "tls:\n  listen: 127.0.0.1:8443\n  cert: /nonexistent/roost.crt\n  key: b.pem\n",
            10,
            "cert",
            "/nonexistent/roost.crt",
        );
        assert_refused(
            "tls: {listen: 127.0.0.1:8443}\n",
            8,
            "tls",
            "missing field `cert`",
        );
    }
}

mod key_sources {
    use super::*;

    /// A valid config whose `key.sources` (line 5) is `sources`.
    fn yaml(sources: &str) -> String {
        format!(
            "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:9090\nhash_seed: \"t\"\n\
             key:\n  sources: {sources}\nworkers:\n  - {{id: w1, addr: 127.0.0.1:9001}}\n"
        )
    }

    fn parse(text: &str) -> Result<ProxyConfig, ConfigError> {
        Loaded::parse(Path::new("proxy.yaml"), text).map(|loaded| loaded.config)
    }

    fn sources(text: &str) -> Vec<KeySource> {
        let config = parse(text).unwrap_or_else(|e| panic!("{text}\nis valid: {e}"));
        config.key.to_sources().expect("validated sources convert")
    }

    fn path(template: &str, prefix: &str) -> KeySource {
        KeySource::Path {
            template: PathTemplate::parse(template).expect("valid template"),
            prefix: prefix.into(),
        }
    }

    /// Assert `sources` is rejected at line 5, at the column where `at`
    /// starts, naming `field`, with `why` in the message.
    fn assert_rejected(sources: &str, at: &str, field: &str, why: &str) {
        let text = yaml(sources);
        let error = parse(&text).expect_err(sources);
        let line = format!("  sources: {sources}");
        let column = line.find(at).map(|i| i as u64 + 1);
        assert_eq!(
            (error.line, Some(error.column), error.field.as_str()),
            (5, column, field),
            "{sources}: {error}"
        );
        assert!(error.message.contains(why), "{sources}: {error}");
        assert!(
            error.to_string().starts_with("proxy.yaml:5:"),
            "the file and line lead: {error}"
        );
    }

    #[test]
    fn header_and_cookie_sources_keep_their_form() {
        assert_eq!(
            sources(&yaml("[{header: x-user-id}, {cookie: uid}]")),
            [
                KeySource::Header("x-user-id".into()),
                KeySource::Cookie("uid".into())
            ]
        );
    }

    #[test]
    fn path_sources_take_an_optional_prefix_and_keep_their_order() {
        let flow = r#"[{path: "/v1/inventory/{key}", prefix: "inventory:"}, {header: x-user-id}, {path: "/v1/quota/{key}/acquire"}]"#;
        assert_eq!(
            sources(&yaml(flow)),
            [
                path("/v1/inventory/{key}", "inventory:"),
                KeySource::Header("x-user-id".into()),
                path("/v1/quota/{key}/acquire", ""),
            ]
        );
        let block = yaml(
            "\n    - path: /v1/inventory/{key}\n      prefix: \"inventory:\"\n    - cookie: uid",
        );
        assert_eq!(
            sources(&block),
            [
                path("/v1/inventory/{key}", "inventory:"),
                KeySource::Cookie("uid".into())
            ]
        );
    }

    #[test]
    fn the_example_config_parses_with_the_path_source_first() {
        let example = include_str!("../../../deploy/config/proxy.example.yaml");
        // Its trusted-hop token comes from the environment, which a unit
        // test cannot set (`unsafe_code` is forbidden); the proxy tests
        // check the example whole with the variable set.
        let text: String = example
            .lines()
            .filter(|line| !line.starts_with("trusted_hop:"))
            .map(|line| format!("{line}\n"))
            .collect();
        let first = sources(&text).into_iter().next();
        assert_eq!(first, Some(path("/v1/inventory/{key}", "inventory:")));
    }

    #[test]
    fn a_source_with_two_kinds_is_rejected_at_the_second() {
        assert_rejected(
            "[{header: a, cookie: b}]",
            "b}",
            "cookie",
            "not both `header` and `cookie`",
        );
        assert_rejected(
            r#"[{path: "/v1/{key}", header: a}]"#,
            "a}",
            "header",
            "exactly one of header, cookie, path, signed_cookie and jwt",
        );
        assert_rejected(
            &format!(
                "[{{signed_cookie: sid, secret: {SECRET}, \
                 jwt: {{header: a, algorithms: [HS256], issuer: i, audience: a}}}}]"
            ),
            "{header",
            "jwt",
            "not both `signed_cookie` and `jwt`",
        );
    }

    #[test]
    fn a_prefix_needs_a_path() {
        assert_rejected(
            r#"[{header: a, prefix: "p:"}]"#,
            "\"p:\"",
            "prefix",
            "only beside `path`",
        );
        assert_rejected(
            r#"[{prefix: "p:"}]"#,
            "\"p:\"",
            "prefix",
            "only beside `path`",
        );
    }

    #[test]
    fn kinds_go_with_a_kind_template_and_a_prefix_does_not() {
        assert_rejected(
            r#"[{path: "/v1/inventory/{key}", kinds: [inventory]}]"#,
            "[inventory]",
            "kinds",
            "`{kind}` segment",
        );
        assert_rejected(
            r#"[{path: "/v1/{kind}/{key}", prefix: "p:"}]"#,
            "\"p:\"",
            "prefix",
            "prefixes the key",
        );
        assert_rejected(
            r#"[{path: "/v1/{kind}/{key}", kinds: [Room]}]"#,
            "[Room]",
            "kinds",
            "not a kind name",
        );
        let parsed = sources(&yaml(
            r#"[{path: "/v1/{kind}/{key}", kinds: [inventory, room]}, {header: x-user-id}]"#,
        ));
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn an_empty_source_is_rejected_where_it_is() {
        assert_rejected("[{header: a}, {}]", "{}", "key.sources", "needs one of");
    }

    #[test]
    fn bad_templates_are_rejected_naming_path() {
        for (template, why) in [
            ("v1/{key}", "must start with '/'"),
            ("/v1/inventory", "exactly one `{key}`"),
            ("/{key}/{key}", "exactly one `{key}`"),
            ("/v1/{key}/{id}", "`{` and `}` only"),
            ("/v1//{key}", "empty segments"),
        ] {
            let sources = format!("[{{path: \"{template}\", prefix: \"p:\"}}]");
            assert_rejected(&sources, &format!("\"{template}\""), "path", why);
        }
    }

    #[test]
    fn a_prefix_with_a_control_character_is_rejected() {
        let sources = r#"[{path: "/v1/{key}", prefix: "inv\n:"}]"#;
        assert_rejected(sources, r#""inv\n:""#, "prefix", "control character");
    }

    /// A 34-byte inline secret, quoted.
    const SECRET: &str = "\"a test secret of at least 32 bytes\"";

    #[test]
    fn a_signed_cookie_source_takes_a_secret_and_an_optional_ttl() {
        let text = yaml(&format!(
            "[{{signed_cookie: sid, secret: {SECRET}}}, {{header: x-user-id}}]"
        ));
        let config = parse(&text).unwrap_or_else(|e| panic!("valid: {e}"));
        let sources = config.key.to_sources().expect("valid sources");
        let [KeySource::SignedCookie(cookie), KeySource::Header(_)] = sources.as_slice() else {
            panic!("a signed cookie, then a header: {sources:?}");
        };
        assert_eq!(
            (cookie.name.as_str(), cookie.ttl_s),
            ("sid", DEFAULT_COOKIE_TTL_S)
        );
        let text = yaml(&format!(
            "[{{signed_cookie: sid, secret: {SECRET}, ttl_s: 3600}}]"
        ));
        let sources = sources_of(&text);
        assert!(matches!(&sources[..], [KeySource::SignedCookie(c)] if c.ttl_s == 3600));
    }

    fn sources_of(text: &str) -> Vec<KeySource> {
        parse(text)
            .unwrap_or_else(|e| panic!("{text}\nis valid: {e}"))
            .key
            .to_sources()
            .expect("validated sources convert")
    }

    #[test]
    fn a_signed_cookie_needs_exactly_one_usable_secret() {
        assert_rejected(
            r#"[{signed_cookie: sid, secret: "short"}]"#,
            "\"short\"",
            "secret",
            "the secret has 5 bytes; a secret needs at least 32",
        );
        assert_rejected(
            "[{signed_cookie: sid, secret_env: ROOST_TEST_VARIABLE_NEVER_SET}]",
            "ROOST_TEST_VARIABLE_NEVER_SET",
            "secret_env",
            "environment variable ROOST_TEST_VARIABLE_NEVER_SET is not set",
        );
        assert_rejected(
            &format!("[{{signed_cookie: sid, secret_env: X, secret: {SECRET}}}]"),
            SECRET,
            "secret",
            "not both",
        );
        assert_rejected(
            "[{signed_cookie: sid}]",
            "sid",
            "signed_cookie",
            "needs its HMAC secret",
        );
        assert_rejected(
            &format!("[{{header: a, secret: {SECRET}}}]"),
            SECRET,
            "secret",
            "goes only beside `signed_cookie`",
        );
        assert_rejected(
            &format!("[{{signed_cookie: sid, secret: {SECRET}, ttl_s: 60}}]"),
            "60",
            "ttl_s",
            "more than 60 s",
        );
    }

    #[test]
    fn a_secret_file_is_read_without_its_line_end_and_a_previous_secret_still_verifies() {
        let dir = roost_testkit::TempDir::new("config-secrets");
        let (new, old) = (
            "the new secret, from a file, 35 b",
            "the old secret, from a file, 35 b",
        );
        let new_file = dir.write("new", &format!("{new}\n"));
        let old_file = dir.write("old", old);
        let text = yaml(&format!(
            "[{{signed_cookie: sid, secret_file: {:?}, previous_secret_file: {:?}}}]",
            new_file.display().to_string(),
            old_file.display().to_string()
        ));
        let sources = sources(&text);
        let [KeySource::SignedCookie(cookie)] = sources.as_slice() else {
            panic!("one signed cookie: {sources:?}");
        };
        let signer = |secret: &str| {
            crate::identity::CookieSigner::new(
                crate::identity::Secret::new(secret.as_bytes(), "t").expect("long enough"),
            )
        };
        let now = 1_700_000_000;
        let by_old = signer(old).sign("alice", now + 10);
        assert_eq!(cookie.signer.verify(by_old.as_bytes(), now), Ok("alice"));
        let minted = cookie.signer.sign("bob", now + 10);
        assert_eq!(signer(new).verify(minted.as_bytes(), now), Ok("bob"));
    }

    #[test]
    fn a_secret_comes_from_one_field_and_a_file_must_be_readable() {
        assert_rejected(
            &format!("[{{signed_cookie: sid, secret_file: /x, secret: {SECRET}}}]"),
            SECRET,
            "secret",
            "not both `secret_file` and `secret`",
        );
        assert_rejected(
            "[{signed_cookie: sid, secret_file: /nonexistent/roost-secret}]",
            "/nonexistent",
            "secret_file",
            "cannot read file /nonexistent/roost-secret",
        );
        assert_rejected(
            &format!("[{{header: a, previous_secret: {SECRET}}}]"),
            SECRET,
            "previous_secret",
            "goes only beside `signed_cookie`",
        );
    }

    #[test]
    fn mint_needs_a_signed_cookie_source() {
        let text = yaml("[{header: x-user-id}]").replace("key:\n", "key:\n  missing: mint\n");
        let error = parse(&text).expect_err("mint without a signed cookie");
        assert_eq!(
            (error.line, error.field.as_str()),
            (4, "key.missing"),
            "{error}"
        );
        assert!(
            error.message.contains("needs a `signed_cookie` source"),
            "{error}"
        );
        assert!(error.to_string().starts_with("proxy.yaml:4:"), "{error}");
        let text = yaml(&format!("[{{signed_cookie: sid, secret: {SECRET}}}]"))
            .replace("key:\n", "key:\n  missing: mint\n");
        let config = parse(&text).unwrap_or_else(|e| panic!("valid: {e}"));
        assert_eq!(config.key.missing, MissingKey::Mint);
    }

    /// `{jwt: {FIELDS}}` with an issuer and an audience.
    fn jwt(fields: &str) -> String {
        format!("[{{jwt: {{{fields}, issuer: https://id.test, audience: roost}}}}]")
    }

    #[test]
    fn an_hs256_jwt_source_reads_a_header_or_a_cookie() {
        let sources = sources_of(&yaml(&jwt(&format!(
            "header: authorization, algorithms: [HS256], secret: {SECRET}, leeway_s: 5"
        ))));
        let [KeySource::Jwt { from, verifier }] = sources.as_slice() else {
            panic!("one jwt source: {sources:?}");
        };
        assert_eq!(from, &TokenAt::Bearer("authorization".into()));
        assert_eq!(verifier.algorithms, [Algorithm::Hs256]);
        assert_eq!((verifier.claim.as_str(), verifier.leeway_s), ("sub", 5));
        assert_eq!(
            (verifier.issuer.as_str(), verifier.audience.as_str()),
            ("https://id.test", "roost")
        );
        let sources = sources_of(&yaml(&jwt(&format!(
            "cookie: idt, claim: email, algorithms: [HS256], secret: {SECRET}"
        ))));
        assert!(
            matches!(&sources[..], [KeySource::Jwt { from: TokenAt::Cookie(c), .. }] if c == "idt")
        );
    }

    #[test]
    fn jwt_sources_are_checked_field_by_field() {
        let hs = |rest: &str| {
            jwt(&format!(
                "header: authorization, algorithms: [HS256], secret: {SECRET}{rest}"
            ))
        };
        for (sources, at, field, why) in [
            (
                jwt("header: authorization, algorithms: [HS512]"),
                "HS512",
                "algorithms",
                "unknown algorithm \"HS512\"",
            ),
            (
                jwt("header: authorization, algorithms: [none]"),
                "none",
                "algorithms",
                "`none` is never accepted",
            ),
            (
                jwt("header: authorization, algorithms: []"),
                "{header",
                "algorithms",
                "at least one",
            ),
            (
                jwt("algorithms: [HS256]"),
                "{algorithms",
                "jwt",
                "`header: authorization` or `cookie: NAME`",
            ),
            (
                jwt("header: a, cookie: b, algorithms: [HS256]"),
                "b,",
                "cookie",
                "not both",
            ),
            (
                jwt("header: a, algorithms: [HS256]"),
                "{header",
                "jwt",
                "needs its HMAC secret",
            ),
            (
                jwt(&format!("header: a, algorithms: [RS256], secret: {SECRET}")),
                SECRET,
                "secret",
                "used only by HS256",
            ),
            (
                jwt("header: a, algorithms: [RS256]"),
                "{header",
                "jwks",
                "need `jwks: PATH`",
            ),
            (
                jwt("header: a, algorithms: [ES256], jwks: /nonexistent/jwks.json"),
                "/nonexistent",
                "jwks",
                "cannot read /nonexistent/jwks.json",
            ),
            (
                hs(", jwks: keys.json"),
                "keys.json",
                "jwks",
                "used only by RS256 and ES256",
            ),
            (hs(", leeway_s: 601"), "601", "leeway_s", "at most 600"),
            (hs(", claim: \"\""), "\"\"", "claim", "must not be empty"),
        ] {
            assert_rejected(&sources, at, field, why);
        }
    }

    #[test]
    fn a_jwks_without_a_key_for_an_accepted_algorithm_is_rejected() {
        let path = std::env::temp_dir().join(format!(
            "roost-config-test-{}-jwks.json",
            std::process::id()
        ));
        let rsa_only =
            r#"{"keys": [{"kty": "EC", "crv": "P-384", "kid": "skipped", "x": "", "y": ""}]}"#;
        std::fs::write(&path, rsa_only).expect("write a temp JWKS");
        let sources = jwt(&format!(
            "header: a, algorithms: [RS256], jwks: {}",
            path.display()
        ));
        let at = path.display().to_string();
        assert_rejected(
            &sources,
            &at,
            "jwks",
            "no RS256 (RSA) or ES256 (P-256) signing key",
        );
        std::fs::remove_file(&path).expect("remove the temp JWKS");
    }

    #[test]
    fn jwt_fields_are_closed_and_issuer_and_audience_required() {
        let text = yaml(&jwt(&format!(
            "header: a, algorithms: [HS256], secret: {SECRET}, aud: x"
        )));
        let error = parse(&text).expect_err("an unknown field");
        assert!(error.message.contains("unknown field `aud`"), "{error}");
        let text = yaml(&format!(
            "[{{jwt: {{header: a, algorithms: [HS256], secret: {SECRET}, audience: roost}}}}]"
        ));
        let error = parse(&text).expect_err("no issuer");
        assert!(error.message.contains("missing field `issuer`"), "{error}");
        assert_eq!(error.line, 5, "{error}");
    }

    #[test]
    fn unknown_source_fields_are_rejected() {
        let text = yaml(r#"[{path: "/v1/{key}", prefx: "p:"}]"#);
        let error = parse(&text).expect_err("an unknown field is rejected");
        assert_eq!(error.line, 5, "{error}");
        assert!(error.message.contains("unknown field `prefx`"), "{error}");
        let block = yaml("\n    - path: /v1/{key}\n      prefx: \"p:\"");
        let error = parse(&block).expect_err("an unknown field is rejected");
        assert_eq!((error.line, error.field.as_str()), (7, "prefx"), "{error}");
    }
}
