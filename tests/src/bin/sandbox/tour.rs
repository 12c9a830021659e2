//! The tour: each function invoked through the Lambda Runtime API with the `events/` files,
//! and what it changed, checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use wikiops_tests::http::Http;
use wikiops_tests::{Lambda, events};

use crate::ecs::{Rollout, Service};
use crate::timeline::Timeline;
use crate::world::{self, CONFIG_BUCKET, World};

/// Everything the tour works with.
pub struct Sandbox {
    pub world: World,
    pub service: Service,
    pub timeline: Arc<Timeline>,
}

fn ensure(cond: bool, what: impl Into<String>) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.into()) }
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Sandbox {
    /// Invokes `function` (a fresh process, as a cold start) with `events/<event>.json`,
    /// after the sandbox's replacements and `extra` ones.
    pub async fn invoke(
        &self,
        function: &str,
        event: &str,
        extra: &[(&str, &str)],
    ) -> Result<Value, String> {
        let mut reps: Vec<(String, String)> = self.world.event_replacements().into_iter().collect();
        reps.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        let refs: Vec<(&str, &str)> = reps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let payload = events::load_with(event, &refs);
        self.timeline
            .doing(&format!("invoke {function} with events/{event}.json"));
        let lambda = Lambda::start(function, self.world.function_env(function)).await;
        let out = lambda.invoke(payload).await;
        lambda.stop().await;
        match out {
            Ok(v) => Ok(v),
            Err(e) => Err(format!("{function}: {e}")),
        }
    }

    /// Lets "ECS" act on the service's deployments and reports what it did.
    pub async fn reconcile(&mut self) -> Result<Rollout, String> {
        self.timeline
            .doing("ECS: checking the service's deployments");
        let r = self.service.reconcile(&self.world).await?;
        match &r {
            Rollout::Steady => self.timeline.info("ECS: no new deployment"),
            Rollout::Completed { deployment_id, task } => self.timeline.ok(&format!(
                "ECS: deployment {deployment_id} → task {task} healthy, load balancer switched, old task stopped"
            )),
            Rollout::Failed { deployment_id, reason } => self.timeline.fail(&format!(
                "ECS: deployment {deployment_id} failed ({reason}); the old task keeps serving"
            )),
        }
        Ok(r)
    }

    async fn sitename(&self) -> Result<String, String> {
        self.sitename_at(self.world.url()).await
    }

    async fn sitename_at(&self, url: String) -> Result<String, String> {
        let mut http = Http::new(url);
        let v = http
            .api_get(&[("action", "query"), ("meta", "siteinfo")])
            .await?;
        v["query"]["general"]["sitename"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no sitename in {v}"))
    }

    async fn put_config(&self, body: String) -> Result<String, String> {
        let out = self
            .world
            .moto
            .s3()
            .await
            .put_object()
            .bucket(CONFIG_BUCKET)
            .key("LocalSettings.php")
            .body(body.into_bytes().into())
            .send()
            .await
            .map_err(|e| format!("PutObject: {e:?}"))?;
        Ok(out.version_id().unwrap_or_default().to_string())
    }

    async fn put_event(&self, version: &str) -> Result<Value, String> {
        let time = now_iso();
        self.invoke(
            "config-redeploy",
            "config-redeploy-s3-put",
            &[
                ("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", version),
                ("2026-11-29T07:00:00.123Z", &time),
            ],
        )
        .await
    }

    /// 1. A config change rolls out once; a broken one rolls itself back.
    pub async fn config_tour(&mut self) -> Result<(), String> {
        let t = self.timeline.clone();
        t.section("1. config-redeploy: edit LocalSettings.php in the bucket");
        let before = self.sitename().await?;
        t.info(&format!("the wiki's site name: {before:?}"));
        let original = std::fs::read_to_string(
            wikiops_tests::paths::root().join("wiki/config/LocalSettings.php"),
        )
        .map_err(|e| e.to_string())?;
        let edited_name = "Wikiops Sandbox (edited)";
        let edited = format!("{original}\n$wgSitename = '{edited_name}';\n");
        let version = self.put_config(edited.clone()).await?;
        t.info(&format!(
            "PutObject s3://{CONFIG_BUCKET}/LocalSettings.php → version {version}"
        ));
        let out = self.put_event(&version).await?;
        t.info(&format!("config-redeploy answered {out}"));
        ensure(
            out["redeployed"].as_array().is_some_and(|a| a.len() == 1),
            "expected one deployment",
        )?;
        let dup = self.put_event(&version).await?;
        t.info(&format!(
            "the same event again (at-least-once delivery) → {}",
            dup["skipped"]
        ));
        ensure(
            dup["redeployed"].as_array().is_some_and(|a| a.is_empty()),
            "a duplicate event redeployed",
        )?;
        ensure(
            matches!(self.reconcile().await?, Rollout::Completed { .. }),
            "the deployment did not complete",
        )?;
        let after = self.sitename().await?;
        ensure(after == edited_name, format!("site name is {after:?}"))?;
        t.ok(&format!("the wiki shows the new site name: {after:?}"));

        t.section("1b. config-redeploy: a PHP syntax error is refused before any task starts");
        let version = self
            .put_config(format!("{edited}\n$wgSitename = ;\n"))
            .await?;
        t.info(&format!(
            "PutObject of a config with a PHP syntax error → version {version}"
        ));
        let out = self.put_event(&version).await?;
        t.info(&format!("config-redeploy answered {out}"));
        ensure(
            out["rejected"][0]["line"].is_u64()
                && out["redeployed"].as_array().is_some_and(|a| a.is_empty()),
            "the syntax error was not refused with its line",
        )?;
        t.ok("refused with its line and message, no deployment");

        t.section(
            "1c. config-redeploy: a config that parses but breaks the wiki rolls itself back",
        );
        let broken = format!(
            "{edited}\nthrow new RuntimeException( 'a configuration that parses but breaks the wiki' );\n"
        );
        let version = self.put_config(broken).await?;
        t.info(&format!(
            "PutObject of a config that throws when loaded → version {version}"
        ));
        let out = self.put_event(&version).await?;
        t.info(&format!("config-redeploy answered {out}"));
        let failed = match self.reconcile().await? {
            Rollout::Failed { deployment_id, .. } => deployment_id,
            other => {
                return Err(format!(
                    "expected the broken deployment to fail, got {other:?}"
                ));
            }
        };
        ensure(
            self.sitename().await.is_ok(),
            "the wiki stopped answering during the failed deployment",
        )?;
        t.ok("the wiki kept answering from the old task");
        let ecs_own = self.service.circuit_breaker_rollback(&self.world).await?;
        t.info(&format!(
            "ECS's circuit breaker starts its own rollback ({ecs_own}, same task definition) and emits SERVICE_DEPLOYMENT_FAILED (EventBridge → config-redeploy)"
        ));
        let time = now_iso();
        let out = self
            .invoke(
                "config-redeploy",
                "config-redeploy-ecs-deployment-failed",
                &[
                    ("ecs-svc/1234567890123456789", &failed),
                    ("2026-11-29T07:20:14Z", &time),
                ],
            )
            .await?;
        t.info(&format!("config-redeploy answered {out}"));
        ensure(
            out["rolled_back"].as_array().is_some_and(|a| !a.is_empty()),
            "nothing was rolled back",
        )?;
        ensure(
            matches!(self.reconcile().await?, Rollout::Completed { .. }),
            "the rollback deployment did not complete",
        )?;
        let name = self.sitename().await?;
        ensure(
            name == edited_name,
            format!("after the rollback the site name is {name:?}"),
        )?;
        t.ok(&format!(
            "rolled back to the last good config: site name {name:?}"
        ));
        let again = self
            .invoke(
                "config-redeploy",
                "config-redeploy-ecs-deployment-failed",
                &[
                    ("ecs-svc/1234567890123456789", &failed),
                    ("2026-11-29T07:20:14Z", &time),
                ],
            )
            .await?;
        ensure(
            again["rolled_back"].as_array().is_none_or(|a| a.is_empty()),
            format!("the same failure was rolled back twice: {again}"),
        )?;
        t.ok("the same failure event again rolls nothing back (no loops)");

        t.section("1d. config-redeploy: a rejected upload never reaches a task");
        let version = self.put_config(String::new()).await?;
        t.info(&format!(
            "PutObject of an empty LocalSettings.php → version {version}"
        ));
        let out = self.put_event(&version).await?;
        t.info(&format!("config-redeploy answered {out}"));
        ensure(
            out["rejected"].as_array().is_some_and(|a| !a.is_empty())
                && out["redeployed"].as_array().is_some_and(|a| a.is_empty()),
            format!("the empty file was not refused: {out}"),
        )?;
        t.info("scale out: ECS starts one more task (it boots the current release)");
        let port = self.service.scale_out(&self.world).await?;
        let name = self.sitename_at(format!("http://127.0.0.1:{port}")).await?;
        ensure(name == edited_name, format!("the new task serves {name:?}"))?;
        t.ok(&format!(
            "the new task serves the last release (site name {name:?}); the refused file reached no task"
        ));
        Ok(())
    }

    /// 2. The DB secret rotates (alternating users) while the wiki keeps answering.
    pub async fn rotation_tour(&mut self) -> Result<(), String> {
        let t = self.timeline.clone();
        t.section("2. secret-rotation: rotate the DB credentials (alternating users)");
        let user_before = self
            .service
            .current()
            .map(|x| x.db_user.clone())
            .unwrap_or_default();
        t.info(&format!("the wiki's task logs in as {user_before:?}"));

        // A client that keeps using the wiki (each request opens a DB connection).
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
        let poller = {
            let (stop, ok, failed, url) =
                (stop.clone(), ok.clone(), failed.clone(), self.world.url());
            let first_failure = first_failure.clone();
            tokio::spawn(async move {
                let mut http = Http::new(url);
                while !stop.load(Ordering::SeqCst) {
                    let r = http
                        .api_get(&[("action", "query"), ("list", "allpages"), ("aplimit", "1")])
                        .await;
                    match r {
                        Ok(v) if v["query"]["allpages"].is_array() => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            let mut f = first_failure.lock().unwrap_or_else(|e| e.into_inner());
                            f.get_or_insert_with(|| format!("{other:?}"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };

        // Secrets Manager starts the rotation: AWSPENDING staged on a new version with the
        // token, then the rotation function is invoked per step (moto cannot invoke it itself).
        let token = self
            .world
            .moto
            .start_rotation(&self.world.db_secret_arn, world::ROTATION_LAMBDA)
            .await;
        t.info(&format!(
            "RotateSecret: rotation enabled, token {token} staged AWSPENDING"
        ));
        for step in ["create", "set", "test", "finish"] {
            let out = self
                .invoke(
                    "secret-rotation",
                    &format!("secret-rotation-{step}-secret"),
                    &[("9f1c8a52-3d4e-4b7a-9a61-2f0e8c5d7b13", &token)],
                )
                .await?;
            t.info(&format!("{step}Secret → {out}"));
        }
        let current = self
            .world
            .moto
            .secretsmanager()
            .await
            .get_secret_value()
            .secret_id(&self.world.db_secret_arn)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|e| format!("GetSecretValue: {e:?}"))?;
        ensure(
            current.version_id() == Some(token.as_str()),
            "AWSCURRENT did not move to the token",
        )?;
        let new_user = serde_json::from_str::<Value>(current.secret_string().unwrap_or_default())
            .ok()
            .and_then(|v| v["username"].as_str().map(str::to_string))
            .unwrap_or_default();
        t.ok(&format!(
            "AWSCURRENT is the new version; its user is {new_user:?}"
        ));
        ensure(
            matches!(self.reconcile().await?, Rollout::Completed { .. }),
            "the redeploy did not complete",
        )?;
        let user_after = self
            .service
            .current()
            .map(|x| x.db_user.clone())
            .unwrap_or_default();
        ensure(
            user_after == new_user && user_after != user_before,
            format!("the new task logs in as {user_after:?}"),
        )?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        let _ = poller.await;
        let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
        let why = first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        ensure(
            ok > 0 && failed == 0,
            format!(
                "{failed} of {} requests failed during the rotation; first: {why}",
                ok + failed
            ),
        )?;
        t.ok(&format!(
            "the new task runs on {user_after:?}; {ok} requests during the rotation and redeploy, 0 failed"
        ));
        Ok(())
    }

    /// 3. Uploads backed up, one deleted, restored byte-identical.
    pub async fn backup_tour(&mut self) -> Result<(), String> {
        let t = self.timeline.clone();
        t.section("3. efs-backup: back up the wiki's uploads, lose a file, restore it");
        let src = self.world.dir.join("upload-src");
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
        for (i, name) in [
            "Sandbox-Logo.png",
            "Sandbox-Diagram.png",
            "Sandbox-Photo.png",
        ]
        .iter()
        .enumerate()
        {
            write_png(&src.join(name), 64 + 32 * i as u32)
                .map_err(|e| format!("write {name}: {e}"))?;
        }
        let task = self.service.current().ok_or("no task is running")?;
        t.doing("uploading 3 images into the wiki (MediaWiki's importImages.php, run in the task)");
        let out = tokio::process::Command::new("php")
            .arg(wikiops_tests::wiki::mediawiki().join("maintenance/importImages.php"))
            .arg(&src)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(task.env.iter().cloned())
            .output()
            .await
            .map_err(|e| format!("run importImages.php: {e}"))?;
        ensure(
            out.status.success(),
            format!(
                "importImages.php failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ),
        )?;
        let mut http = Http::new(self.world.url());
        let v = http
            .api_get(&[
                ("action", "query"),
                ("list", "allimages"),
                ("aiprop", "url|sha1"),
            ])
            .await?;
        let images = v["query"]["allimages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ensure(
            images.len() == 3,
            format!("the wiki lists {} images", images.len()),
        )?;
        t.ok("the wiki lists 3 uploaded files");

        let out = self.invoke("efs-backup", "efs-backup-backup", &[]).await?;
        t.info(&format!("backup → {out}"));
        ensure(out["status"] == "complete", "the backup did not complete")?;
        let snapshot = out["snapshot_id"].as_str().unwrap_or_default().to_string();

        // Lose one file.
        let url = images[1]["url"].as_str().unwrap_or_default();
        let rel = url
            .split("/images/")
            .nth(1)
            .ok_or(format!("unexpected image URL {url}"))?
            .to_string();
        let path = self.world.uploads.join(&rel);
        let original = std::fs::read(&path).map_err(|e| format!("read {rel}: {e}"))?;
        let digest = hex::encode(Sha256::digest(&original));
        std::fs::remove_file(&path).map_err(|e| e.to_string())?;
        let r = http.get(&format!("/images/{rel}")).await?;
        ensure(
            r.status == 404,
            format!("deleted file answers {}", r.status),
        )?;
        t.info(&format!(
            "deleted images/{rel} (sha256 {}…): the wiki answers 404",
            &digest[..12]
        ));

        // The sample restores into `<mount>/.efs-restore`; this one puts the file back in place.
        let quoted = format!("\"{rel}\"");
        let snapshot_quoted = format!("\"{snapshot}\"");
        let out = self
            .invoke(
                "efs-backup",
                "efs-backup-restore",
                &[
                    ("/.efs-restore", ""),
                    ("\"a/ab\"", &quoted),
                    ("\"latest\"", &snapshot_quoted),
                ],
            )
            .await?;
        t.info(&format!("restore → {out}"));
        let restored = std::fs::read(&path).map_err(|e| format!("read restored {rel}: {e}"))?;
        let again = hex::encode(Sha256::digest(&restored));
        ensure(again == digest, "the restored file differs")?;
        let r = http.get(&format!("/images/{rel}")).await?;
        ensure(
            r.status == 200 && r.body.as_ref() == original.as_slice(),
            format!("restored file answers {}", r.status),
        )?;
        t.ok(&format!("images/{rel} restored from snapshot {snapshot}: byte-identical (sha256 {}…), served again", &digest[..12]));
        Ok(())
    }

    /// 4. A pile of revisions, some with plaintext passwords: dry run, then for real.
    pub async fn janitor_tour(&mut self) -> Result<(), String> {
        use aws_sdk_ecs::types::{ContainerDefinition, KeyValuePair, TaskDefinitionStatus};
        let t = self.timeline.clone();
        t.section("4. taskdef-janitor: retire stale revisions, purge plaintext secrets");
        let ecs = self.world.moto.ecs().await;
        let in_use = self.current_task_definition().await?;
        for i in 0..8 {
            let extra: &[(&str, &str)] = if i % 3 == 1 {
                &[("DB_PASSWORD", "plaintext-Passw0rd")]
            } else {
                &[]
            };
            self.world.register_wiki_task_definition(extra).await?;
        }
        for i in 0..5 {
            let mut env = vec![KeyValuePair::builder().name("JOBS").value("1").build()];
            if i == 4 {
                env.push(
                    KeyValuePair::builder()
                        .name("SMTP_PASSWORD")
                        .value("plaintext-smtp-Passw0rd")
                        .build(),
                );
            }
            ecs.register_task_definition()
                .family("wiki-jobs")
                .container_definitions(
                    ContainerDefinition::builder()
                        .name("jobs")
                        .image("mediawiki:1.43")
                        .memory(512)
                        .set_environment(Some(env))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| format!("RegisterTaskDefinition: {e:?}"))?;
        }
        let active = |ecs: aws_sdk_ecs::Client| async move {
            let mut arns = Vec::new();
            let mut pages = ecs
                .list_task_definitions()
                .status(TaskDefinitionStatus::Active)
                .into_paginator()
                .send();
            while let Some(p) = pages.next().await {
                let p = p.map_err(|e| format!("ListTaskDefinitions: {e:?}"))?;
                arns.extend(
                    p.task_definition_arns()
                        .iter()
                        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string()),
                );
            }
            arns.sort();
            Ok::<Vec<String>, String>(arns)
        };
        let before = active(ecs.clone()).await?;
        t.info(&format!(
            "{} ACTIVE revisions; the service uses {in_use}",
            before.len()
        ));

        let plan = self
            .invoke("taskdef-janitor", "taskdef-janitor-dry-run", &[])
            .await?;
        let findings: Vec<String> = plan["plaintext_findings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let vars: Vec<&str> = f["variables"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["variable"].as_str())
                    .collect();
                format!(
                    "{} {} ({})",
                    short(&f["task_definition"]),
                    vars.join(","),
                    f["outcome"].as_str().unwrap_or("")
                )
            })
            .collect();
        t.info(&format!(
            "dry run: would deregister {}; plaintext findings: {}",
            shorts(&plan["planned"]["deregister"]).join(", "),
            findings.join("; ")
        ));
        ensure(
            active(ecs.clone()).await? == before,
            "the dry run changed something",
        )?;
        t.ok("the dry run changed nothing");

        let out = self
            .invoke("taskdef-janitor", "taskdef-janitor-scheduled", &[])
            .await?;
        t.info(&format!(
            "for real: deregistered {}; deleted {}",
            shorts(&out["deregistered"]).join(", "),
            shorts(&out["deleted"]).join(", ")
        ));
        ensure(
            shorts(&out["planned"]["deregister"]) == shorts(&plan["planned"]["deregister"]),
            "the real run did not do what the dry run planned",
        )?;
        let after = active(ecs.clone()).await?;
        ensure(
            after.contains(&in_use),
            format!("the in-use revision {in_use} was retired"),
        )?;
        for arn in &after {
            let td = ecs
                .describe_task_definition()
                .task_definition(arn)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let plaintext = td
                .task_definition()
                .into_iter()
                .flat_map(|d| d.container_definitions())
                .flat_map(|c| c.environment())
                .any(|kv| kv.name().is_some_and(|n| n.contains("PASSWORD")));
            ensure(
                !plaintext || *arn == in_use,
                format!("{arn} still holds a plaintext password"),
            )?;
        }
        let logs_clean = !out.to_string().contains("plaintext-Passw0rd")
            && !plan.to_string().contains("plaintext-Passw0rd");
        ensure(logs_clean, "a plaintext value reached the output")?;
        t.ok(&format!(
            "kept {} revisions: {}",
            after.len(),
            after.join(", ")
        ));
        Ok(())
    }

    async fn current_task_definition(&self) -> Result<String, String> {
        let svc = self
            .world
            .moto
            .ecs()
            .await
            .describe_services()
            .cluster(world::CLUSTER)
            .services(world::SERVICE)
            .send()
            .await
            .map_err(|e| format!("DescribeServices: {e:?}"))?;
        svc.services()
            .first()
            .and_then(|s| s.task_definition())
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .ok_or_else(|| "the service has no task definition".into())
    }
}

/// `family:revision` of a task-definition ARN.
fn short(v: &Value) -> String {
    v.as_str()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default()
        .to_string()
}

/// [`short`] of each ARN in a JSON list.
fn shorts(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v.as_array().into_iter().flatten().map(short).collect();
    out.sort();
    out
}

/// A small PNG (`size`×`size`, a gradient).
fn write_png(path: &std::path::Path, size: u32) -> Result<(), String> {
    let mut pixels = Vec::with_capacity((size * size * 3) as usize);
    for y in 0..size {
        for x in 0..size {
            pixels.extend_from_slice(&[(x * 255 / size) as u8, (y * 255 / size) as u8, 128]);
        }
    }
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), size, size);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| e.to_string())?;
    w.write_image_data(&pixels).map_err(|e| e.to_string())
}
