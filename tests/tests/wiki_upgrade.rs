//! The upgrade rehearsal: a wiki installed on MediaWiki 1.39 (Debian 12's package) with a page
//! and an upload, then a deployment of 1.43 (the image's line: Debian 13's package, from
//! `scripts/fetch-mediawiki-1.43`). As in a web task of the new revision, the schema step
//! (`wiki-boot schema`, `update.php`) runs first and only when it exited 0 does 1.43 serve; the
//! page and the upload survive. Skipped (with a note) when the 1.43 tree is not there.

#[path = "wiki_support.rs"]
mod support;

use std::path::Path;

use support::*;
use wikiops_tests::http::Http;
use wikiops_tests::wiki;

#[tokio::test]
async fn an_upgrade_from_1_39_to_1_43_keeps_pages_and_uploads() {
    let new_code = wikiops_tests::paths::root().join(wiki::MEDIAWIKI_1_43);
    assert!(
        wiki::php_module().is_some() && Path::new(wiki::MEDIAWIKI).join("index.php").exists(),
        "Apache's mod_php and Debian's MediaWiki 1.39 are missing: run scripts/setup"
    );
    assert!(
        new_code.join("index.php").exists(),
        "MediaWiki 1.43 is missing: run scripts/setup (scripts/fetch-mediawiki-1.43)"
    );
    let (moto, db) = peers_with_example_config("wiki-config").await;
    let uploads = open_tempdir();
    let images = uploads.path().join("images");

    // --- 1.39: install, a page, an upload ------------------------------------------------------
    let old = revision(Path::new(wiki::MEDIAWIKI), &images, &moto, &db);
    let logs = schema_step(&old).await;
    assert!(logs.contains("has_tables=false"), "{logs}");
    let text = "Written on 1.39. '''Survives''' the upgrade.";
    maintenance(
        &old,
        "edit.php",
        &["--summary=rehearsal", "Upgrade_rehearsal"],
        Some(text),
    )
    .await;
    let scratch = open_tempdir();
    let png: Vec<u8> = std::iter::once(b"\x89PNG\r\n\x1a\n".to_vec())
        .chain(std::iter::once(vec![0u8; 64]))
        .flatten()
        .collect();
    std::fs::write(scratch.path().join("Rehearsal.png"), &png).unwrap();
    maintenance(
        &old,
        "importImages.php",
        &[&scratch.path().display().to_string()],
        None,
    )
    .await;
    let old_web = serve(&old).await;
    let mut http = Http::new(format!("http://127.0.0.1:{}", old.port));
    let site = http
        .api_get(&[("action", "query"), ("meta", "siteinfo")])
        .await
        .unwrap();
    assert_eq!(site["query"]["general"]["generator"], "MediaWiki 1.39.17");

    // --- 1.43: the new revision's schema step while 1.39 still serves, then its web container --
    let new = revision(&new_code, &images, &moto, &db);
    let logs = schema_step(&new).await;
    assert!(
        logs.contains("has_tables=true"),
        "an upgrade, not an install:\n{logs}"
    );
    assert!(logs.contains("schema is up to date"), "{logs}");
    // The old revision's tasks keep serving until the new ones are healthy, now on the new
    // schema (update.php dropped ipblocks and pagelinks.pl_title): what they still answer.
    let mut old_http = Http::new(format!("http://127.0.0.1:{}", old.port));
    for path in [
        "/index.php?title=Upgrade_rehearsal&action=raw",
        "/index.php?title=Upgrade_rehearsal",
        "/api.php?action=query&meta=siteinfo&format=json",
    ] {
        let r = old_http.get(path).await.unwrap();
        eprintln!("1.39 on the 1.43 schema: GET {path} -> {}", r.status);
    }
    let new_web = serve(&new).await;
    old_web.stop().await;
    let mut http = Http::new(format!("http://127.0.0.1:{}", new.port));
    let site = http
        .api_get(&[("action", "query"), ("meta", "siteinfo")])
        .await
        .unwrap();
    assert!(
        site["query"]["general"]["generator"]
            .as_str()
            .is_some_and(|g| g.starts_with("MediaWiki 1.43.")),
        "{site}"
    );
    let page = http
        .get("/index.php?title=Upgrade_rehearsal&action=raw")
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.text().trim_end(), text, "the page survives");
    let info = http
        .api_get(&[
            ("action", "query"),
            ("titles", "File:Rehearsal.png"),
            ("prop", "imageinfo"),
            ("iiprop", "url|size"),
        ])
        .await
        .unwrap();
    let file = info["query"]["pages"]
        .as_object()
        .and_then(|p| p.values().next())
        .cloned()
        .unwrap_or_default();
    assert_eq!(file["imageinfo"][0]["size"], png.len(), "{info}");
    let url = file["imageinfo"][0]["url"].as_str().expect("a file URL");
    let path = url
        .split_once("/images/")
        .map(|(_, p)| p)
        .expect("under images/");
    let served = http.get(&format!("/images/{path}")).await.unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.body, png, "the upload survives, byte for byte");
    new_web.stop().await;
}
