//! The wiki image's files: the Dockerfile is hadolint-clean, its shell (every `RUN`) and every
//! shell script of the project (wiki/, scripts/, .ci/run) are shellcheck-clean,
//! LocalSettings.php is valid PHP, and the image installs exactly the Apache/PHP files the
//! end-to-end test runs with.
//! No Docker engine runs here: the Dockerfile is linted, not built.

use std::path::{Path, PathBuf};
use std::process::Command;

use wikiops_tests::paths::{root, venv_bin};

fn wiki() -> PathBuf {
    root().join("wiki")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let text = std::fs::read_to_string(wiki().join("Dockerfile")).expect("wiki/Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
        } else {
            current.push_str(t);
            if !current.trim().is_empty() {
                out.push(current.trim().to_string());
            }
            current.clear();
        }
    }
    out
}

#[test]
fn dockerfile_is_hadolint_clean() {
    let path = format!(
        "{}:{}",
        root().join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (ok, out) = run(Command::new(venv_bin("hadolint"))
        .env("PATH", path)
        .arg(wiki().join("Dockerfile")));
    assert!(ok, "hadolint:\n{out}");
}

#[test]
fn every_shell_script_is_shellcheck_clean() {
    let scratch = tempfile::tempdir().unwrap();
    let runs: Vec<String> = instructions()
        .into_iter()
        .filter_map(|i| i.strip_prefix("RUN ").map(str::to_string))
        .collect();
    assert!(!runs.is_empty(), "the Dockerfile has RUN instructions");
    // The image's SHELL is bash with pipefail.
    let script = scratch.path().join("dockerfile-run.sh");
    std::fs::write(
        &script,
        format!("#!/bin/bash\nset -o pipefail\n{}\n", runs.join("\n")),
    )
    .unwrap();
    let mut scripts = vec![script];
    scripts.extend(shell_scripts(&wiki()));
    // every script of the project: what builds and pushes this image (it cannot run here: no
    // container engine), the test, demo, bench and set-up commands, and CI's entry point
    let project = shell_scripts(&root().join("scripts"));
    assert!(
        project.iter().any(|p| p.ends_with("scripts/push-image")),
        "{project:?}"
    );
    scripts.extend(project);
    scripts.push(root().join(".ci/run"));
    for s in &scripts {
        let (ok, out) = run(Command::new(venv_bin("shellcheck")).arg(s));
        assert!(ok, "shellcheck {}:\n{out}", s.display());
    }
}

fn shell_scripts(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("target") {
                out.extend(shell_scripts(&p));
            }
            continue;
        }
        let head = std::fs::read(&p).unwrap_or_default();
        let is_sh = p.extension().is_some_and(|x| x == "sh")
            || head.starts_with(b"#!/bin/sh")
            || head.starts_with(b"#!/bin/bash")
            || head.starts_with(b"#!/usr/bin/env bash");
        if is_sh {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_image_runs_what_the_end_to_end_test_runs() {
    let ins = instructions();
    let copies: Vec<&String> = ins
        .iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from="))
        .collect();
    // Files of this repository the end-to-end test uses as they are.
    for (src, dest) in [
        ("wiki/apache/wikiops.conf", "/etc/apache2/conf-available/"),
        ("wiki/php/wikiops.ini", "/usr/local/etc/php/conf.d/"),
    ] {
        assert!(root().join(src).exists(), "{src}");
        assert!(
            copies.iter().any(|c| c.contains(src) && c.contains(dest)),
            "the Dockerfile does not install {src} into {dest}: {copies:?}"
        );
    }
    // Every COPY source exists (the build context is the repository root).
    for c in &copies {
        let parts: Vec<&str> = c
            .split_whitespace()
            .skip(1)
            .filter(|p| !p.starts_with("--"))
            .collect();
        for src in &parts[..parts.len() - 1] {
            assert!(root().join(src).exists(), "COPY source {src} is missing");
        }
    }
    assert!(ins.iter().any(|i| i.starts_with("FROM ")), "no FROM");
    let base = ins
        .iter()
        .find(|i| i.starts_with("ARG MEDIAWIKI_IMAGE="))
        .expect("the MediaWiki image is an ARG");
    assert!(
        base.starts_with("ARG MEDIAWIKI_IMAGE=mediawiki:1.43."),
        "pinned to a 1.43.x release: {base}"
    );
    assert!(
        ins.iter().any(|i| i.contains("a2enconf wikiops")),
        "wikiops.conf is enabled"
    );
    assert!(
        ins.iter().any(|i| i.starts_with("CMD [\"wiki-boot\"]")),
        "the container starts wiki-boot"
    );
    assert!(
        !ins.iter()
            .any(|i| i.contains("awscli") || i.contains("aws-cli")),
        "no AWS CLI in the image"
    );
}

#[test]
fn local_settings_is_valid_php() {
    let (ok, out) = run(Command::new("php")
        .arg("-l")
        .arg(wiki().join("config/LocalSettings.php")));
    assert!(ok, "php -l:\n{out}");
}

#[test]
fn local_settings_fails_fast_on_an_empty_setting() {
    // Outside MediaWiki the file exits at once; with MEDIAWIKI defined it reads the settings.
    let probe = "define('MEDIAWIKI', true); define('CACHE_DB', 1); define('CACHE_MEMCACHED', 2); \
                 function wfLoadSkin($s) {} $IP = '/tmp'; \
                 require $argv[1]; echo json_encode(['server' => $wgServer, 'force' => $wgForceHTTPS, \
                 'cdn' => $wgCdnServersNoPurge, 'main' => $wgMainCacheType, 'session' => $wgSessionCacheType, \
                 'jobs' => $wgJobRunRate, 'uploads' => $wgUploadDirectory, 'db' => $wgDBserver, \
                 'servers' => isset($wgDBservers) ? count($wgDBservers) : 0, 'mc' => $wgMemCachedServers ?? []]);";
    let ls = wiki().join("config/LocalSettings.php");
    let full = [
        ("WIKI_SERVER", "https://wiki.example.com"),
        ("VPC_CIDR", "10.0.0.0/16"),
        ("WIKI_SECRET_KEY", "k-s3cr3t"),
        ("DB_HOST", "db.internal"),
        ("DB_NAME", "wiki"),
        ("DB_USER", "wiki"),
        ("DB_PASSWORD", "p-s3cr3t"),
        ("WEB_ROOT", "/var/www/html"),
    ];
    let php = |env: &[(&str, &str)]| {
        let out = Command::new("php")
            .args(["-r", probe])
            .arg(&ls)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("php");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = php(&full);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(v["server"], "https://wiki.example.com");
    assert_eq!(v["force"], true);
    assert_eq!(v["cdn"], serde_json::json!(["10.0.0.0/16"]));
    assert_eq!(v["main"], 1, "CACHE_DB without a cache cluster");
    assert_eq!(v["session"], 1);
    assert_eq!(v["jobs"], 0);
    assert_eq!(v["uploads"], "/var/www/html/images");
    assert_eq!(v["db"], "db.internal:3306");
    assert_eq!(v["servers"], 0);

    let mut with_cache = full.to_vec();
    with_cache.push(("MEMCACHED_SERVERS", "cache-1:11211, cache-2:11211"));
    with_cache.push(("DB_CA_BUNDLE", "/etc/rds.pem"));
    let (code, out, _) = php(&with_cache);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(v["main"], 2, "the cache cluster when configured");
    assert_eq!(v["session"], 2);
    assert_eq!(
        v["mc"],
        serde_json::json!(["cache-1:11211", "cache-2:11211"])
    );
    assert_eq!(v["servers"], 1, "the CA bundle goes with the server entry");

    for (name, _) in full.iter().filter(|(n, _)| *n != "WEB_ROOT") {
        let env: Vec<(&str, &str)> = full
            .iter()
            .map(|(k, v)| if k == name { (*k, " ") } else { (*k, *v) })
            .collect();
        let (code, out, err) = php(&env);
        assert_eq!(code, Some(1), "{name}: {out}{err}");
        assert!(
            err.contains(&format!("required setting {name} is unset or empty")),
            "{name}: {err}"
        );
        assert!(!out.contains("s3cr3t") && !err.contains("s3cr3t"));
    }
}

/// The first page shows the image's logo, not MediaWiki's "Set $wgLogos" placeholder: the
/// example configuration sets `$wgLogos` to a file the Dockerfile puts under the web root.
#[test]
fn the_example_configuration_sets_the_logo_the_image_ships() {
    let probe = "define('MEDIAWIKI', true); define('CACHE_DB', 1); define('CACHE_MEMCACHED', 2); \
                 function wfLoadSkin($s) {} $IP = '/tmp'; \
                 require $argv[1]; echo json_encode($wgLogos);";
    let out = Command::new("php")
        .args(["-r", probe])
        .arg(wiki().join("config/LocalSettings.php"))
        .env_clear()
        .envs([
            ("WIKI_SERVER", "https://wiki.example.com"),
            ("VPC_CIDR", "10.0.0.0/16"),
            ("WIKI_SECRET_KEY", "k"),
            ("DB_HOST", "db"),
            ("DB_NAME", "wiki"),
            ("DB_USER", "wiki"),
            ("DB_PASSWORD", "p"),
            ("WEB_ROOT", "/var/www/html"),
        ])
        .output()
        .expect("php");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logos: serde_json::Value = serde_json::from_str(&text).expect(&text);
    let url = "/resources/assets/wikiops-logo.svg";
    assert_eq!(logos["1x"], url, "{logos}");
    assert_eq!(logos["icon"], url, "{logos}");
    // The Dockerfile copies the shipped file to the web root's path of that URL.
    let dockerfile = std::fs::read_to_string(wiki().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!(
            "COPY wiki/assets/wikiops-logo.svg /var/www/html{url}\n"
        )),
        "the image ships the logo at {url}"
    );
    let svg = std::fs::read_to_string(wiki().join("assets/wikiops-logo.svg")).unwrap();
    assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
}

/// With HTTPS at the load balancer (X-Forwarded-Proto https), Apache sends HSTS, and
/// MediaWiki redirects to HTTPS and marks its cookies secure; plain HTTP gets neither.
#[test]
fn https_deployments_get_hsts_and_secure_cookies() {
    let conf = std::fs::read_to_string(wiki().join("apache/wikiops.conf")).unwrap();
    let set_https = conf
        .find("SetEnvIf X-Forwarded-Proto \"^https$\" HTTPS=on")
        .expect("HTTPS=on from X-Forwarded-Proto");
    let hsts = conf
        .find("Header always set Strict-Transport-Security \"max-age=31536000\" env=HTTPS\n")
        .expect("HSTS only when HTTPS");
    assert!(set_https < hsts);
    let ls = std::fs::read_to_string(wiki().join("config/LocalSettings.php")).unwrap();
    assert!(ls.contains("$wgForceHTTPS = strncmp( $wgServer, 'https://', 8 ) === 0;"));
    assert!(ls.contains("$wgCookieSecure = $wgForceHTTPS;"));
}
