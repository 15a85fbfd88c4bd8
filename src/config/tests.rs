use super::*;

const MINIMAL: &str = r#"
[split]
percent = 20
group = "orders-v2"
key = ["header:X-User-ID", "client_ip"]

[pools.stable]
endpoints = ["127.0.0.1:8001"]
[pools.new]
endpoints = ["127.0.0.1:8002"]
"#;

fn err(src: &str) -> ConfigError {
    parse(src, "t.toml").expect_err("config should be rejected")
}

/// Replace `old` in the minimal config and return the error.
fn err_with(old: &str, new: &str) -> ConfigError {
    assert!(MINIMAL.contains(old), "{old} not in MINIMAL");
    err(&MINIMAL.replace(old, new))
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.split.key.len(), 2);
    assert!(c.split.fallback_to_stable && c.split.expose_pool);
    assert_eq!(c.stable.max_fails, 3);
    assert_eq!(c.stable.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.rollback.interval, Duration::from_secs(5));
    assert_eq!(c.rollback.recover_for, Duration::from_secs(180));
    assert_eq!(c.features.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.state.audit, PathBuf::from("grayshift-audit.jsonl"));
    assert_eq!(c.server.max_header_bytes, 60 * 1024);
    assert_eq!(c.server.underscore_headers, UnderscoreHeaders::Drop);
    assert!(!c.features.case_insensitive);
}

#[test]
fn underscore_headers_takes_three_words() {
    let with = |v: &str| MINIMAL.replace("[split]", &format!("[server]\nunderscore_headers = {v}\n[split]"));
    assert_eq!(parse(&with("\"allow\""), "t.toml").unwrap().server.underscore_headers, UnderscoreHeaders::Allow);
    assert_eq!(parse(&with("\"reject\""), "t.toml").unwrap().server.underscore_headers, UnderscoreHeaders::Reject);
    let e = err(&with("\"ignore\""));
    assert_eq!((e.line, e.col), (3, 22), "{e}");
    assert!(e.message.contains("\"allow\", \"drop\" or \"reject\""), "{e}");
}

#[test]
fn escaped_slashes_default_to_reject() {
    assert_eq!(parse(MINIMAL, "t.toml").unwrap().features.escaped_slashes, EscapedSlashes::Reject);
    let text = format!("{MINIMAL}\n[features]\nescaped_slashes = \"decode\"\n");
    assert_eq!(parse(&text, "t.toml").unwrap().features.escaped_slashes, EscapedSlashes::Decode);
    let e = err(&format!("{MINIMAL}\n[features]\nescaped_slashes = \"Decode\"\n"));
    assert_eq!((e.line, e.col), (13, 19), "{e}");
}

#[test]
fn feature_paths_are_normalised() {
    let text = format!("{MINIMAL}\n[features]\npaths = [\"/api//v2/./checkout\"]\ncase_insensitive = true\n");
    let c = parse(&text, "t.toml").unwrap();
    assert_eq!(c.features.paths, ["/api/v2/checkout"]);
    assert!(c.features.matches(&http::Method::GET, "/API/v1/../V2/%43heckout"));
}

#[test]
fn shipped_example_configs_are_valid() {
    for file in ["config/grayshift.toml", "config/demo.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
        if file.ends_with("grayshift.toml") {
            let levels: Vec<Level> = c.rules.iter().map(|r| r.level).collect();
            // The runbook's three rules, and L3 from shadow reads (docs/src/shadow.md).
            assert_eq!(levels, [Level::L1, Level::L2, Level::L3, Level::L3]);
            assert!(matches!(c.rules[3].signal, SignalConfig::Local { metric: LocalMetric::ShadowMismatchRate, .. }));
            assert_eq!((c.rules[3].condition, c.rules[3].min_requests), (Condition::Above(0.01), 50));
            assert!(c.shadow.is_some());
            assert_eq!(c.rules[0].condition, Condition::Above(0.05));
            assert_eq!(c.rules[0].for_, Duration::from_secs(300));
            assert_eq!(c.rules[1].condition, Condition::Above(0.8));
            assert_eq!(c.rules[1].for_, Duration::from_secs(180));
            assert_eq!(c.rules[2].for_, Duration::ZERO);
        }
    }
}

#[test]
fn percent_out_of_range_points_at_the_value() {
    let e = err_with("percent = 20", "percent = 101");
    assert_eq!((e.line, e.col), (3, 11), "{e}");
    assert!(e.message.contains("between 0 and 100"), "{e}");
    assert_eq!(e.to_string(), format!("t.toml:3:11: {}", e.message));
}

#[test]
fn unknown_keys_are_errors() {
    let e = err_with("group = \"orders-v2\"", "group = \"orders-v2\"\npercnt = 3");
    assert!(e.message.contains("percnt"), "{e}");
    assert_eq!(e.line, 5);
    let e = err(&format!("{MINIMAL}\n[pools.canary]\nendpoints = [\"127.0.0.1:1\"]\n"));
    assert!(e.message.contains("canary"), "{e}");
}

#[test]
fn both_pools_are_required() {
    let e = err(&MINIMAL.replace("[pools.new]\nendpoints = [\"127.0.0.1:8002\"]\n", ""));
    assert!(e.message.contains("new"), "{e}");
}

#[test]
fn bad_values_are_rejected_with_their_location() {
    let cases = [
        ("\"127.0.0.1:8002\"", "\"127.0.0.1\"", "invalid endpoint"),
        ("\"127.0.0.1:8002\"", "\"127.0.0.1:0\"", "invalid endpoint"),
        ("[\"127.0.0.1:8002\"]", "[]", "at least one endpoint"),
        ("\"client_ip\"", "\"ip\"", "unknown key source"),
        ("\"header:X-User-ID\"", "\"header:bad header\"", "invalid header name"),
        ("group = \"orders-v2\"", "group = \"\"", "must not be empty"),
        ("group = \"orders-v2\"", "group = \"g\"\ntrusted_proxies = [\"10.0.0.0/33\"]", "invalid CIDR"),
        (
            "group = \"orders-v2\"",
            "group = \"g\"\nforce_new = [\"a\"]\nforce_stable = [\"a\"]",
            "both force_new and force_stable",
        ),
        ("percent = 20", "percent = \"20\"", "invalid type"),
        (
            "[\"127.0.0.1:8002\"]",
            "[\"127.0.0.1:8002\"]\nhealth = { path = \"/up HTTP/1.1\\r\\nx: y\" }",
            "not a valid request target",
        ),
    ];
    for (old, new, expected) in cases {
        let e = err_with(old, new);
        assert!(e.message.contains(expected), "{old} -> {new}: {e}");
        assert!(e.line > 1 && e.col >= 1, "{e}");
    }
}

#[test]
fn durations_addresses_and_rules_are_validated() {
    let cases = [
        ("[server]\nlisten = \"nope\"", "invalid listen address"),
        ("[server]\ndrain_timeout = \"5 parsecs\"", "invalid duration"),
        ("[admin]\nlisten = \"0.0.0.0:8080\"", "must differ"),
        ("[rollback]\nhook = { exec = [] }", "needs a program"),
        ("[rollback]\nhook = { exec = [\"a\"], webhook = \"http://x/\" }", "exactly one"),
        ("[features]\npaths = [\"api\"]", "must start with '/'"),
        ("[features]\nstatus = 200", "4xx or 5xx"),
        ("[features]\nmode = \"drop\"", "features.mode"),
        ("[features]\nescaped_slashes = \"keep\"", "features.escaped_slashes must be \"reject\" or \"decode\""),
        ("[[rules]]\nname = \"r\"\nlevel = \"l1\"\nsignal = { source = \"local\", metric = \"error_rate\" }\nabove = 1", "level must be"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L4\"\nsignal = { source = \"local\", metric = \"error_rate\" }\nabove = 1", "level must be"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L1\"\nsignal = { source = \"local\", metric = \"error_rate\" }", "needs `above` or `below`"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L1\"\nsignal = { source = \"local\", metric = \"errors\" }\nabove = 1", "unknown local metric"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L1\"\nsignal = { source = \"local\", metric = \"error_rate\", query = \"x\" }\nabove = 1", "does not apply"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L2\"\nsignal = { source = \"postgres\", query = \"select 1\" }\nabove = 1", "needs `url`"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L2\"\nsignal = { source = \"prometheus\", url = \"https://p/\", query = \"up\", ca = \"/nonexistent/ca.pem\" }\nabove = 1", "CA file /nonexistent/ca.pem"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L2\"\nsignal = { source = \"http\", url = \"http://p/\", pointer = \"a\" }\nabove = 1", "RFC 6901"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L2\"\nsignal = { source = \"kafka\" }\nabove = 1", "unknown signal source"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L2\"\nsignal = { source = \"postgres\", url = \"postgresql://h/db\", query = \"q\" }\nabove = 1\nmin_requests = 5", "only to `local`"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L1\"\nsignal = { source = \"local\", metric = \"error_rate\" }\nabove = 1\non_error = \"panic\"", "on_error"),
        ("[[rules]]\nname = \"r\"\nlevel = \"L1\"\nsignal = { source = \"local\", metric = \"error_rate\" }\nabove = 1\n[[rules]]\nname = \"r\"\nlevel = \"L1\"\nsignal = { source = \"local\", metric = \"error_rate\" }\nabove = 1", "duplicate rule name"),
    ];
    for (extra, expected) in cases {
        let e = err(&format!("{MINIMAL}\n{extra}\n"));
        assert!(e.message.contains(expected), "{extra}: {e}");
    }
}

#[test]
fn line_col_counts_characters_not_bytes() {
    assert_eq!(line_col("ab\nçd = x", 6), (2, 3));
    assert_eq!(line_col("", 0), (1, 1));
}

#[test]
fn garbage_never_panics() {
    for src in ["", "[", "[split]\npercent = ", "\u{0}", "[[rules]]\nsignal = 3", "pools = 1\nsplit = 2"] {
        assert!(parse(src, "t.toml").is_err());
    }
}

const FLEET: &str = "\n[fleet]\netcd = [\"http://127.0.0.1:2379\"]\nreplica = \"a\"\n";

#[test]
fn without_fleet_there_is_no_fleet() {
    assert!(parse(MINIMAL, "t.toml").unwrap().fleet.is_none());
}

#[test]
fn fleet_gets_documented_defaults() {
    let c = parse(&format!("{MINIMAL}{FLEET}"), "t.toml").unwrap();
    let f = c.fleet.unwrap();
    assert_eq!(f.name, "orders-v2", "name defaults to split.group");
    assert_eq!(f.prefix(), "/grayshift/v1/orders-v2/");
    assert_eq!(f.replica, "a");
    assert_eq!(f.lease_ttl, Duration::from_secs(10));
    assert_eq!(f.sync_timeout, Duration::from_secs(5));
    assert_eq!((f.user, f.password, f.tls_ca), (None, None, None));
}

#[test]
fn fleet_errors_point_at_the_value() {
    let with = |old: &str, new: &str| err(&format!("{MINIMAL}{}", FLEET.replace(old, new)));
    let e = with("[\"http://127.0.0.1:2379\"]", "[]");
    assert!(e.message.contains("at least one URL"), "{e}");
    assert_eq!(e.line, 13);
    let e = with("http://127.0.0.1:2379", "127.0.0.1:2379");
    assert!(e.message.contains("invalid etcd URL"), "{e}");
    assert_eq!((e.line, e.col), (13, 9));
    let e = with("http://127.0.0.1:2379", "ftp://x:1");
    assert!(e.message.contains("invalid etcd URL"), "{e}");
    let e = with("replica = \"a\"", "replica = \"a\"\nname = \"\"");
    assert!(e.message.contains("fleet.name"), "{e}");
    assert_eq!(e.line, 15);
    let e = with("replica = \"a\"", "replica = \"a/b\"");
    assert!(e.message.contains("fleet.replica"), "{e}");
    let e = with("replica = \"a\"", "replica = \"a\"\nlease_ttl = \"10 parsecs\"");
    assert!(e.message.contains("invalid duration"), "{e}");
    let e = with("replica = \"a\"", "replica = \"a\"\nlease_ttl = \"500ms\"");
    assert!(e.message.contains("at least 1s"), "{e}");
    let e = with("replica = \"a\"", "replica = \"a\"\nsync_timeout = \"0s\"");
    assert!(e.message.contains("greater than 0"), "{e}");
    let e = with("replica = \"a\"", "replica = \"a\"\nuser = \"gs\"");
    assert!(e.message.contains("password_env"), "{e}");
    let e = with("replica = \"a\"", "replica = \"a\"\npassword_env = \"P\"");
    assert!(e.message.contains("needs fleet.user"), "{e}");
    let e = with("replica = \"a\"", "replica = \"a\"\nuser = \"u\"\npassword_env = \"P\"\npassword_file = \"p\"");
    assert!(e.message.contains("not both"), "{e}");
    let e = with("replica = \"a\"", "replica = \"a\"\ntls = { ca = \"ca.pem\" }");
    assert!(e.message.contains("https://"), "{e}");
    let e = with("replica = \"a\"", "replica = \"a\"\nleader = true");
    assert!(e.message.contains("unknown field"), "{e}");
}

#[test]
fn fleet_accepts_https_with_a_ca_and_credentials() {
    let src = format!(
        "{MINIMAL}\n[fleet]\netcd = [\"https://e1:2379\", \"https://e2:2379/\"]\nname = \"n\"\nreplica = \"r\"\n\
         user = \"gs\"\npassword_file = \"/run/pw\"\ntls = {{ ca = \"ca.pem\" }}\nlease_ttl = \"2s\"\n"
    );
    let f = parse(&src, "t.toml").unwrap().fleet.unwrap();
    assert_eq!(f.etcd, ["https://e1:2379", "https://e2:2379"]);
    assert_eq!(f.password, Some(PasswordSource::File("/run/pw".into())));
    assert_eq!(f.tls_ca, Some(PathBuf::from("ca.pem")));
    assert_eq!(f.lease_ttl, Duration::from_secs(2));
}

#[test]
fn local_scope_defaults_to_the_fleet_in_fleet_mode() {
    let rule = "\n[[rules]]\nname = \"r\"\nlevel = \"L1\"\nabove = 0.1\nsignal = { source = \"local\", metric = \"error_rate\"SCOPE }\n";
    let local = |scope: &str| rule.replace("SCOPE", scope);
    let fleet_wide = |c: &Config| matches!(c.rules[0].signal, SignalConfig::Local { fleet_wide, .. } if fleet_wide);
    assert!(!fleet_wide(&parse(&format!("{MINIMAL}{}", local("")), "t.toml").unwrap()));
    assert!(fleet_wide(&parse(&format!("{MINIMAL}{FLEET}{}", local("")), "t.toml").unwrap()));
    let replica = parse(&format!("{MINIMAL}{FLEET}{}", local(", scope = \"replica\"")), "t.toml").unwrap();
    assert!(!fleet_wide(&replica));
    let e = err(&format!("{MINIMAL}{}", local(", scope = \"fleet\"")));
    assert!(e.message.contains("needs a [fleet] section"), "{e}");
    let e = err(&format!("{MINIMAL}{FLEET}{}", local(", scope = \"pod\"")));
    assert!(e.message.contains("\"fleet\" or \"replica\""), "{e}");
}

#[test]
fn urls_come_from_the_environment_or_files_and_never_show_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let hook_file = dir.path().join("hook-url");
    std::fs::write(&hook_file, "  https://repair.internal/x?token=abc\n").unwrap();
    std::env::set_var("GRAYSHIFT_CONFIG_TEST_SLACK", "https://hooks.slack.test/services/T0/B0/XYZ");
    std::env::set_var("GRAYSHIFT_CONFIG_TEST_DB", "postgresql://u@db/x");
    std::env::set_var("GRAYSHIFT_CONFIG_TEST_BAD", "ftp://secret-token@x");
    let text = format!(
        "{MINIMAL}\n[rollback]\nhook = {{ webhook_file = \"{}\" }}\n\n[[notify]]\nwebhook_env = \"GRAYSHIFT_CONFIG_TEST_SLACK\"\n\n[ledger]\npostgres_env = \"GRAYSHIFT_CONFIG_TEST_DB\"\npassword_file = \"{}\"\n",
        hook_file.display(),
        hook_file.display()
    );
    let c = parse(&text, "t.toml").unwrap();
    assert_eq!(c.notify[0].webhook, "https://hooks.slack.test/services/T0/B0/XYZ");
    assert!(
        matches!(&c.rollback.hook.unwrap().action, HookAction::Webhook(u, None) if u == "https://repair.internal/x?token=abc")
    );
    let LedgerSink::Postgres { url, .. } = &c.ledger.unwrap().sink else { panic!("postgres sink") };
    assert!(url.starts_with("postgresql://u@db/x?password="), "{url}");

    let bad = format!("{MINIMAL}\n[[notify]]\nwebhook_env = \"GRAYSHIFT_CONFIG_TEST_BAD\"\n");
    let e = err(&bad);
    assert!(e.message.contains("$GRAYSHIFT_CONFIG_TEST_BAD") && !e.message.contains("secret-token"), "{e}");
    let both =
        format!("{MINIMAL}\n[[notify]]\nwebhook = \"http://a/\"\nwebhook_env = \"GRAYSHIFT_CONFIG_TEST_SLACK\"\n");
    assert!(err(&both).message.contains("only one of `webhook`, `webhook_env` or `webhook_file`"));
    let missing = format!("{MINIMAL}\n[[notify]]\nwebhook_file = \"/nonexistent/url\"\n");
    assert!(err(&missing).message.contains("cannot read /nonexistent/url"));
}

#[test]
fn fleet_endpoints_can_come_from_the_environment() {
    std::env::set_var("GRAYSHIFT_CONFIG_TEST_ETCD", "https://e1:2379, https://e2:2379\nhttps://e3:2379");
    let c =
        parse(&format!("{MINIMAL}\n[fleet]\netcd_env = \"GRAYSHIFT_CONFIG_TEST_ETCD\"\nreplica = \"r\"\n"), "t.toml")
            .unwrap();
    assert_eq!(c.fleet.unwrap().etcd, ["https://e1:2379", "https://e2:2379", "https://e3:2379"]);
    let both = format!(
        "{MINIMAL}\n[fleet]\netcd = [\"http://a:2379\"]\netcd_env = \"GRAYSHIFT_CONFIG_TEST_ETCD\"\nreplica = \"r\"\n"
    );
    assert!(err(&both).message.contains("exactly one of `etcd`, `etcd_env` or `etcd_file`"));
}

const SCHEMA: &str = "\n[schema]\nurl = \"postgresql://u@127.0.0.1/db\"\ntool = \"flyway\"\nnew_requires = \"2.4\"\nstable_supports = \"2.5\"\n";

#[test]
fn schema_section_gets_defaults_and_accepts_a_list() {
    let c = parse(&format!("{MINIMAL}{SCHEMA}"), "t.toml").unwrap();
    let s = c.schema.unwrap();
    assert_eq!((s.interval, s.timeout), (Duration::from_secs(10), Duration::from_secs(5)));
    assert!(s.bounds.overlap());
    let list = SCHEMA.replace("tool = \"flyway\"", "tool = \"alembic\"").replace("\"2.5\"", "[\"a1\", \"b2\"]");
    let c = parse(&format!("{MINIMAL}{list}"), "t.toml").unwrap();
    assert_eq!(c.schema.unwrap().bounds.stable_supports, vec!["a1", "b2"]);
}

#[test]
fn schema_errors_name_the_key_with_a_position() {
    let bad = |from: &str, to: &str| err(&format!("{MINIMAL}{}", SCHEMA.replace(from, to))).to_string();
    let e = bad("\"flyway\"", "\"liquibase\"");
    assert!(e.contains("t.toml:") && e.contains("schema.tool") && e.contains("liquibase"), "{e}");
    let e = bad("\"2.4\"", "\"abc\"");
    assert!(e.contains("t.toml:") && e.contains("new_requires"), "{e}");
    let e = bad("tool = \"flyway\"", "tool = \"flyway\"\nquery = \"select 1\"");
    assert!(e.contains("schema.query") && e.contains("sql"), "{e}");
    let e = bad("tool = \"flyway\"", "tool = \"sql\"");
    assert!(e.contains("query"), "{e}");
    let e = bad("postgresql://u@127.0.0.1/db", "mysql://x");
    assert!(e.contains("schema.url"), "{e}");
}

const RAMP: &str = "\n[ramp]\nsteps = [5, 20, 50, 100]\nhold = [\"10m\", \"48h\", \"1h\"]\nmin_requests = 500\n";

#[test]
fn ramp_takes_one_hold_per_gap_or_one_for_all() {
    let c = parse(&format!("{MINIMAL}{RAMP}"), "t.toml").unwrap();
    let r = c.ramp.unwrap();
    assert_eq!(r.plan.steps, [5, 20, 50, 100]);
    assert_eq!(r.plan.holds[1], Duration::from_secs(48 * 3600));
    assert_eq!((r.plan.min_requests, r.auto_start), (500, false));
    let one = RAMP.replace("[\"10m\", \"48h\", \"1h\"]", "\"1s\"");
    let r = parse(&format!("{MINIMAL}{one}auto_start = true\n"), "t.toml").unwrap().ramp.unwrap();
    assert_eq!(r.plan.holds, vec![Duration::from_secs(1); 3]);
    assert!(r.auto_start);
    assert!(parse(MINIMAL, "t.toml").unwrap().ramp.is_none());
}

#[test]
fn ramp_errors_point_at_the_key() {
    let bad = |from: &str, to: &str| err(&format!("{MINIMAL}{}", RAMP.replace(from, to))).to_string();
    // Line 13 of the joined text is `steps = …`, 14 is `hold = …`.
    let e = bad("[5, 20, 50, 100]", "[5, 50, 20, 100]");
    assert!(e.starts_with("t.toml:13:") && e.contains("ramp.steps") && e.contains("must increase"), "{e}");
    let e = bad("[5, 20, 50, 100]", "[5, 20, 150]");
    assert!(e.starts_with("t.toml:13:") && e.contains("150"), "{e}");
    let e = bad("[\"10m\", \"48h\", \"1h\"]", "[\"10m\", \"48h\"]");
    assert!(e.starts_with("t.toml:14:") && e.contains("ramp.hold") && e.contains("2 values for 4 steps"), "{e}");
    let e = bad("\"48h\"", "\"soon\"");
    assert!(e.starts_with("t.toml:14:") && e.contains("soon"), "{e}");
    let e = err(&format!("{MINIMAL}\n[[notify]]\nwebhook = \"http://127.0.0.1:9/\"\nformat = \"teams\"\n")).to_string();
    assert!(e.contains("notify.format") && e.contains("slack"), "{e}");
}

#[test]
fn flags_tokens_are_read_one_a_line_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "  first-secret \n\nsecond-secret\n").unwrap();
    let c = parse(&format!("{MINIMAL}\n[flags]\ntokens_file = {:?}\n", file.to_str().unwrap()), "t.toml").unwrap();
    let flags = c.flags.as_ref().unwrap();
    assert_eq!(flags.tokens.0, ["first-secret", "second-secret"]);
    assert!(!format!("{c:?}").contains("secret"), "Debug shows no token");
    assert!(parse(MINIMAL, "t.toml").unwrap().flags.is_none());

    let e = err(&format!("{MINIMAL}\n[flags]\n"));
    assert!(e.to_string().starts_with("t.toml:12:1: [flags] needs `tokens_file = \"PATH\"`"), "{e}");
    let e = err(&format!("{MINIMAL}\n[flags]\ntokens_file = \"/nonexistent/tokens\"\n"));
    assert!(e.to_string().contains("t.toml:13:15: cannot read /nonexistent/tokens"), "{e}");
    let e = err(&format!("{MINIMAL}\n[flags]\ntokens_file = \"a\"\ntokens_env = \"B\"\n"));
    assert!(e.to_string().contains("give only one of `tokens_file` or `tokens_env`"), "{e}");
    let e = err(&format!("{MINIMAL}\n[flags]\ntokens = \"x\"\n"));
    assert!(e.to_string().contains("unknown field `tokens`"), "{e}");
}
