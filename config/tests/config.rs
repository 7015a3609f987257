//! Loading, defaults, overrides and every class of configuration error.

use std::collections::BTreeSet;

use gantry_config::{load_str, CloudConfig, Configuration, EdgeConfig, LoadError, Problem};

fn no_env(_: &str) -> Option<String> {
    None
}

fn problems<T: Configuration + std::fmt::Debug>(text: &str) -> Vec<Problem> {
    match load_str::<T>(text, "t.toml", &no_env) {
        Ok(c) => panic!("expected problems, got {c:?}"),
        Err(LoadError::Invalid { source_name, problems }) => {
            assert_eq!(source_name, "t.toml");
            problems
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

/// Every dotted key path of a TOML table, with arrays as leaves.
fn key_paths(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(t) = value {
        for (k, v) in t {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(_) => key_paths(v, &path, out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }
}

fn default_file_is_complete_and_equal<T: Configuration + PartialEq + std::fmt::Debug>() {
    let parsed: T = load_str(T::DEFAULT_TOML, "default", &no_env).expect("default file is valid");
    assert_eq!(parsed, T::default(), "the commented default file and Default disagree");
    let mut documented = BTreeSet::new();
    key_paths(&toml::from_str::<toml::Value>(T::DEFAULT_TOML).unwrap(), "", &mut documented);
    let mut actual = BTreeSet::new();
    key_paths(&toml::Value::try_from(T::default()).unwrap(), "", &mut actual);
    let commented_out: BTreeSet<String> = actual.difference(&documented).cloned().collect();
    assert!(commented_out.is_empty(), "keys missing from the default file: {commented_out:?}");
}

#[test]
fn edge_default_file_matches_defaults() {
    default_file_is_complete_and_equal::<EdgeConfig>();
}

#[test]
fn cloud_default_file_matches_defaults() {
    default_file_is_complete_and_equal::<CloudConfig>();
}

#[test]
fn empty_file_is_the_defaults() {
    let c: EdgeConfig = load_str("", "t.toml", &no_env).unwrap();
    assert_eq!(c, EdgeConfig::default());
    assert_eq!(c.robot.id, "robot-0");
    assert_eq!(c.camera.width, 1920);
    assert_eq!(c.status_http.listen, "127.0.0.1:8080");
    let c: CloudConfig = load_str("", "t.toml", &no_env).unwrap();
    assert_eq!(c.http.listen, "127.0.0.1:8090");
    assert_eq!(c.broker.listen, "127.0.0.1:1883");
}

#[test]
fn unknown_key_is_named_with_allowed_keys() {
    let p = problems::<EdgeConfig>("[camera]\nframe_rate = 30\n");
    assert_eq!(keys(&p), ["camera.frame_rate"]);
    assert_eq!(p[0].problem, "unknown key");
    assert!(p[0].expected.contains("`fps`"), "{}", p[0].expected);

    let p = problems::<CloudConfig>("[cameras]\nx = 1\n");
    assert_eq!(keys(&p), ["cameras"]);
    assert!(p[0].expected.contains("`broker`"));
}

#[test]
fn wrong_type_is_named_with_expected_type() {
    let p = problems::<EdgeConfig>("[control]\nrate_hz = \"fast\"\n");
    assert_eq!(keys(&p), ["control.rate_hz"]);
    assert!(p[0].problem.contains("string \"fast\""), "{}", p[0].problem);
    assert_eq!(p[0].expected, "u32");

    let p = problems::<EdgeConfig>("[camera]\nsource = \"usb\"\n");
    assert_eq!(keys(&p), ["camera.source"]);
    assert!(p[0].expected.contains("`synthetic`") && p[0].expected.contains("`v4l`"), "{}", p[0].expected);

    let p = problems::<EdgeConfig>("[governor]\nzone_min_m = [1.0, 2.0]\n");
    assert_eq!(keys(&p), ["governor.zone_min_m"]);
}

#[test]
fn out_of_range_values_are_each_reported() {
    let p = problems::<EdgeConfig>("[camera]\npool_frames = 1\n[health]\nperiod_s = 0\n[recorder]\njpeg_quality = 0\n");
    assert_eq!(keys(&p), ["camera.pool_frames", "recorder.jpeg_quality", "health.period_s"]);
    assert_eq!(p[0].expected, "a value from 2 to 64");
    assert_eq!(p[0].problem, "1 is out of range");

    let p = problems::<EdgeConfig>("[governor]\nmax_motor_temp_c = nan\n");
    assert_eq!(keys(&p), ["governor.max_motor_temp_c"]);

    let p = problems::<CloudConfig>("[uploads]\nwindow_start_hour = 24\n");
    assert_eq!(keys(&p), ["uploads.window_start_hour"]);
}

#[test]
fn cross_field_rules() {
    // Control must be at least as fast as the camera.
    let p = problems::<EdgeConfig>("[control]\nrate_hz = 20\n[realtime]\ncontrol_stall_ms = 100\n");
    assert_eq!(keys(&p), ["control.rate_hz"]);
    assert!(p[0].problem.contains("below the camera rate"));
    // A stall is only told from a slow loop after two control periods.
    let p = problems::<EdgeConfig>("[control]\nrate_hz = 30\n[camera]\nfps = 30\n");
    assert_eq!(keys(&p), ["realtime.control_stall_ms"]);
    assert!(p[0].problem.contains("less than two control periods"), "{}", p[0].problem);

    // The inference deadline must be shorter than the life of one policy output.
    let p =
        problems::<EdgeConfig>("[control]\nrate_hz = 100\nmax_action_age_periods = 5\ninference_deadline_ms = 50\n");
    assert_eq!(keys(&p), ["control.inference_deadline_ms"]);
    assert!(p[0].problem.contains("50.0 ms"), "{}", p[0].problem);

    // Per-joint arrays follow the joint count.
    let p = problems::<EdgeConfig>("[firmware]\njoints = 5\n");
    assert_eq!(
        keys(&p),
        [
            "governor.joint_min_rad",
            "governor.joint_max_rad",
            "governor.max_velocity_rad_s",
            "governor.max_accel_rad_s2",
            "arm.dh"
        ]
    );

    let p = problems::<EdgeConfig>("[firmware]\nheartbeat_period_ms = 40\nlink_timeout_ms = 50\n");
    assert_eq!(keys(&p), ["firmware.link_timeout_ms"]);

    let p = problems::<EdgeConfig>("[governor]\nzone_min_m = [0.0, 0.0, 3.0]\n");
    assert_eq!(keys(&p), ["governor.zone_max_m[2]"]);

    let p = problems::<EdgeConfig>(
        "[governor]\nkeep_out_m = [[0.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.5, 0.0, 0.0, 0.4, 1.0, 1.0]]\nzone_min_fraction = 0.0\n",
    );
    assert_eq!(keys(&p), ["governor.keep_out_m[1]", "governor.zone_min_fraction"]);

    let p = problems::<CloudConfig>("[http]\nlisten = \"127.0.0.1:1883\"\n");
    assert_eq!(keys(&p), ["http.listen"]);

    // An external broker over TLS needs its CA, and the CA must be a file
    // (what `run` would refuse).
    let tls = "[broker]\nmode = \"external\"\nurl = \"mqtts://u:p@broker.site:8883\"\n";
    assert_eq!(keys(&problems::<CloudConfig>(tls)), ["broker.ca_path"]);
    let p = problems::<CloudConfig>(&format!("{tls}ca_path = \"/nonexistent/ca.pem\"\n"));
    assert_eq!(keys(&p), ["broker.ca_path"]);
    assert!(p[0].problem.contains("cannot be read"), "{}", p[0].problem);
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/config.rs");
    let p = problems::<CloudConfig>(&format!("{tls}ca_path = \"{here}\"\nclient_key_path = \"{here}\"\n"));
    assert_eq!(keys(&p), ["broker.client_cert_path"]);

    // The catalog's CA: a readable file, and only with a PostgreSQL catalog.
    let p = problems::<CloudConfig>(&format!("[catalog]\nca_path = \"{here}\"\n"));
    assert_eq!(keys(&p), ["catalog.ca_path"]);
    assert!(p[0].problem.contains("catalog.url is empty"), "{}", p[0].problem);
    let p = problems::<CloudConfig>("[catalog]\nurl = \"postgres://g@db:5432/g\"\nca_path = \"/nonexistent/ca.pem\"\n");
    assert_eq!(keys(&p), ["catalog.ca_path"]);
    assert!(p[0].problem.contains("cannot be read"), "{}", p[0].problem);
}

#[test]
fn quota_must_fit_the_disk() {
    let mut c = gantry_config::Checker::new();
    let mut cfg = EdgeConfig::default();
    cfg.recorder.quota_gb = 100.0;
    cfg.check(&mut c, Some(50_000_000_000));
    let p = c.into_problems();
    assert_eq!(keys(&p), ["recorder.quota_gb"]);
    assert!(p[0].problem.contains("50.0 GB"), "{}", p[0].problem);

    let mut c = gantry_config::Checker::new();
    cfg.check(&mut c, Some(200_000_000_000));
    assert!(c.into_problems().is_empty());
}

#[test]
fn syntax_errors_name_line_and_column() {
    let p = problems::<EdgeConfig>("[robot]\nid = \n");
    assert_eq!(p.len(), 1);
    assert!(p[0].key.starts_with("line 2, column"), "{}", p[0].key);
    assert!(p[0].problem.starts_with("invalid TOML"));
}

#[test]
fn environment_overrides_apply_and_are_blamed() {
    let env = |k: &str| match k {
        "GANTRY_ROBOT_ID" => Some("cell-7-arm-2".to_owned()),
        "GANTRY_BROKER_URL" => Some("mqtts://broker.site:8883".to_owned()),
        _ => None,
    };
    let c: EdgeConfig = load_str("[robot]\nid = \"x\"\n", "t.toml", &env).unwrap();
    assert_eq!(c.robot.id, "cell-7-arm-2");
    assert_eq!(c.uplink.broker_url, "mqtts://broker.site:8883");

    let bad = |k: &str| (k == "GANTRY_BROKER_URL").then(|| "http://nope".to_owned());
    match load_str::<EdgeConfig>("", "t.toml", &bad) {
        Err(e) => assert_eq!(
            e.lines(),
            ["t.toml: uplink.broker_url (from GANTRY_BROKER_URL): \"http://nope\" is not a broker URL (expected mqtt://HOST:PORT or mqtts://HOST:PORT)"]
        ),
        Ok(_) => panic!("bad override accepted"),
    }
}

#[test]
fn problem_lines_follow_the_contract() {
    match load_str::<EdgeConfig>("[camera]\nfps = 0\n", "robot.toml", &no_env) {
        Err(e) => {
            let lines = e.lines();
            assert_eq!(lines[0], "robot.toml: camera.fps: 0 is out of range (expected a value from 1 to 240)");
        }
        Ok(_) => panic!("accepted fps = 0"),
    }
}
