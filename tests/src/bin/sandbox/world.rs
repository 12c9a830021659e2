//! The stand-ins (moto for AWS, MariaDB for RDS, a directory for EFS) and what the template
//! would create in them: the config bucket holding LocalSettings.php, the backup bucket, the
//! ECS cluster, service and task definition, the DB secret with its master secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, ContainerDependency, KeyValuePair, Secret,
};
use mysql_async::prelude::Queryable;
use serde_json::json;
use wikiops_tests::{MariaDb, Moto};

/// Names as in the `events/` samples, so the sample events work against the sandbox as they are.
pub const CONFIG_BUCKET: &str = "wiki-config-123456789012";
pub const BACKUP_BUCKET: &str = "wiki-backup-123456789012";
pub const CLUSTER: &str = "wiki";
pub const SERVICE: &str = "web";
pub const FAMILY: &str = "wiki-web";
pub const DB_NAME: &str = "wiki";
pub const DB_USER: &str = "wiki";
pub const WIKI_NAME: &str = "Wikiops Sandbox";
/// The rotation function's ARN in the sample events and in RotateSecret.
pub const ROTATION_LAMBDA: &str = "arn:aws:lambda:us-east-1:123456789012:function:secret-rotation";

/// The running stand-ins and the names of what was provisioned in them.
pub struct World {
    pub moto: Moto,
    pub db: MariaDb,
    /// The sandbox's working folder (`.sandbox/`).
    pub dir: PathBuf,
    /// The "EFS" directory: the wiki's uploads (`images/`).
    pub uploads: PathBuf,
    /// The public port of the wiki (the load balancer's listener).
    pub port: u16,
    pub db_secret_arn: String,
    pub master_secret_arn: String,
    pub wiki_key_arn: String,
    pub admin_password: String,
}

fn random_password() -> String {
    format!("Sbx{}", uuid::Uuid::new_v4().simple())
}

impl World {
    /// Starts moto and MariaDB (in parallel) and provisions them.
    pub async fn start(dir: &Path, port: u16) -> Result<World, String> {
        let (moto, db) = tokio::join!(Moto::start(), MariaDb::start());
        let uploads = dir.join("efs/images");
        std::fs::create_dir_all(&uploads)
            .map_err(|e| format!("create {}: {e}", uploads.display()))?;
        let mut w = World {
            moto,
            db,
            dir: dir.to_path_buf(),
            uploads,
            port,
            db_secret_arn: String::new(),
            master_secret_arn: String::new(),
            wiki_key_arn: String::new(),
            admin_password: random_password(),
        };
        w.provision().await?;
        Ok(w)
    }

    /// The wiki's public URL.
    pub fn url(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    async fn provision(&mut self) -> Result<(), String> {
        // S3: both buckets versioned and empty, as CloudFormation leaves them: the first task's
        // schema step seeds the example LocalSettings.php (CONFIG_SEED_DIR).
        for b in [CONFIG_BUCKET, BACKUP_BUCKET] {
            self.moto.versioned_bucket(b).await?;
        }

        // RDS: the wiki's own user (TLS required), as the template's setup creates it.
        let password = random_password();
        let mut admin = self.db.admin().await;
        admin
            .query_drop(format!(
                "CREATE USER '{DB_USER}'@'%' IDENTIFIED BY '{password}' REQUIRE SSL"
            ))
            .await
            .map_err(|e| format!("CREATE USER: {e}"))?;
        admin
            .query_drop(format!(
                "GRANT ALL PRIVILEGES ON {DB_NAME}.* TO '{DB_USER}'@'%'"
            ))
            .await
            .map_err(|e| format!("GRANT: {e}"))?;
        admin.disconnect().await.map_err(|e| e.to_string())?;

        // Secrets Manager: the RDS-managed master secret, the DB secret, the wiki's secret key.
        let sm = self.moto.secretsmanager().await;
        let create = |name: &'static str, value: String| {
            let sm = sm.clone();
            async move {
                sm.create_secret()
                    .name(name)
                    .secret_string(value)
                    .send()
                    .await
                    .map_err(|e| format!("CreateSecret {name}: {e:?}"))
                    .map(|o| o.arn().unwrap_or_default().to_string())
            }
        };
        self.master_secret_arn = create(
            "rds!db-sandbox",
            json!({"username": self.db.admin_user, "password": self.db.admin_password}).to_string(),
        )
        .await?;
        self.db_secret_arn = create(
            "wiki/db",
            json!({
                "engine": "mariadb",
                "host": "127.0.0.1",
                "port": self.db.port,
                "username": DB_USER,
                "password": password,
                "dbname": DB_NAME,
                "ssl": true,
                "masterarn": self.master_secret_arn,
            })
            .to_string(),
        )
        .await?;
        self.wiki_key_arn = create(
            "wiki/secret-key",
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
        )
        .await?;

        // ECS: the cluster, the wiki's task definition (config location in plain environment,
        // credentials through secrets/valueFrom) and its service.
        let ecs = self.moto.ecs().await;
        ecs.create_cluster()
            .cluster_name(CLUSTER)
            .send()
            .await
            .map_err(|e| format!("CreateCluster: {e:?}"))?;
        let td = self.register_wiki_task_definition(&[]).await?;
        ecs.create_service()
            .cluster(CLUSTER)
            .service_name(SERVICE)
            .task_definition(td)
            .desired_count(1)
            .send()
            .await
            .map_err(|e| format!("CreateService: {e:?}"))?;
        Ok(())
    }

    /// Registers a revision of the wiki's task definition (with extra plain environment) and
    /// returns its ARN.
    pub async fn register_wiki_task_definition(
        &self,
        extra_env: &[(&str, &str)],
    ) -> Result<String, String> {
        let kv = |k: &str, v: &str| KeyValuePair::builder().name(k).value(v).build();
        let mut env = vec![
            kv("CONFIG_BUCKET", CONFIG_BUCKET),
            kv("CONFIG_PREFIX", ""),
            kv("WIKI_SERVER", &self.url()),
            kv("WIKI_NAME", WIKI_NAME),
            kv("VPC_CIDR", "127.0.0.0/8"),
            kv("DB_HOST", "127.0.0.1"),
            kv("DB_PORT", &self.db.port.to_string()),
            kv("DB_NAME", DB_NAME),
            kv("DB_CA_BUNDLE", &self.db.ca_path.display().to_string()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| kv(k, v)));
        let secret =
            |name: &str, from: String| Secret::builder().name(name).value_from(from).build();
        let secrets = vec![
            secret("DB_USER", format!("{}:username::", self.db_secret_arn))
                .map_err(|e| e.to_string())?,
            secret("DB_PASSWORD", format!("{}:password::", self.db_secret_arn))
                .map_err(|e| e.to_string())?,
            secret("WIKI_SECRET_KEY", self.wiki_key_arn.clone()).map_err(|e| e.to_string())?,
        ];
        // As the template: `schema` (not essential) runs to completion, then `wiki` serves.
        let examples = wikiops_tests::paths::root().join("wiki/config");
        let mut schema_env = env.clone();
        schema_env.push(kv("CONFIG_SEED_DIR", &examples.display().to_string()));
        let schema = ContainerDefinition::builder()
            .name("schema")
            .image("mediawiki:1.43")
            .essential(false)
            .memory(1024)
            .command("wiki-boot")
            .command("schema")
            .set_environment(Some(schema_env))
            .set_secrets(Some(secrets.clone()))
            .build();
        let container = ContainerDefinition::builder()
            .name("wiki")
            .image("mediawiki:1.43")
            .essential(true)
            .depends_on(
                ContainerDependency::builder()
                    .container_name("schema")
                    .condition(ContainerCondition::Success)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .memory(1024)
            .set_environment(Some(env))
            .set_secrets(Some(secrets.clone()))
            .build();
        let out = self
            .moto
            .ecs()
            .await
            .register_task_definition()
            .family(FAMILY)
            .container_definitions(schema)
            .container_definitions(container)
            .send()
            .await
            .map_err(|e| format!("RegisterTaskDefinition: {e:?}"))?;
        out.task_definition()
            .and_then(|t| t.task_definition_arn())
            .map(str::to_string)
            .ok_or_else(|| "RegisterTaskDefinition returned no ARN".to_string())
    }

    /// The settings each function gets from the template, for this sandbox.
    pub fn function_env(&self, function: &str) -> Vec<(String, String)> {
        let mut env = self.moto.env();
        // Marks every process of this sandbox (scripts/demo --once checks none is left).
        env.push(("SANDBOX_DIR".into(), self.dir.display().to_string()));
        let s = |k: &str, v: &str| (k.to_string(), v.to_string());
        match function {
            "config-redeploy" => env.extend([
                s("CONFIG_BUCKET", CONFIG_BUCKET),
                s("CONFIG_PREFIX", ""),
                s("ECS_CLUSTER", CLUSTER),
                s("ECS_SERVICE", SERVICE),
            ]),
            "secret-rotation" => env.extend([
                s("ROTATION_STRATEGY", "alternating"),
                s("DB_CA_BUNDLE", &self.db.ca_path.display().to_string()),
                s("DB_ENDPOINT", &format!("127.0.0.1:{}", self.db.port)),
                s("ECS_CLUSTER", CLUSTER),
                s("ECS_SERVICE", SERVICE),
            ]),
            "efs-backup" => env.extend([
                s("SOURCE_DIR", &self.uploads.display().to_string()),
                s("BACKUP_BUCKET", BACKUP_BUCKET),
                s("BACKUP_PREFIX", "wiki/"),
                s("KEEP_SNAPSHOTS", "30"),
                s("RETENTION_DAYS", "35"),
            ]),
            "taskdef-janitor" => env.extend([
                s("KEEP_REVISIONS", "3"),
                s("DELETE_AFTER_DAYS", "0"),
                s("PURGE_PLAINTEXT", "true"),
            ]),
            _ => {}
        }
        env
    }

    /// Text replacements that turn the sample events' example values into this sandbox's.
    pub fn event_replacements(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:wiki/db-AbCdEf".to_string(),
            self.db_secret_arn.clone(),
        );
        // The EFS mount point in the samples is the uploads directory here.
        m.insert("/mnt/wiki".to_string(), self.uploads.display().to_string());
        m
    }
}
