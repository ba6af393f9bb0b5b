//! The deployment material, run for real as far as this machine allows (no Docker engine, no
//! Kubernetes): the Dockerfile's CMD, ENV and HEALTHCHECK, and the containers of the rendered
//! Kubernetes overlays — their arguments, environment, config files and volumes — run as
//! processes of the binary cargo built, their probes answered; and every metric the Grafana
//! dashboard and the alert rules name is exported by the running nodes.
//!
//! Rendering uses `kubectl kustomize` through `scripts/check_deploy.py --render` (PyYAML from
//! `.venv-services`, which `scripts/check-deploy.sh` installs).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The objects an overlay renders to.
fn render(overlay: &str) -> Vec<Value> {
    let python = Path::new(ROOT).join(".venv-services/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/check-deploy.sh (it installs PyYAML there)", python.display());
    let out = Command::new(python).arg(Path::new(ROOT).join("scripts/check_deploy.py")).args(["--render", overlay]).output().unwrap();
    assert!(out.status.success(), "render {overlay}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// What a container is given, mapped onto this machine: paths it mounts become folders of a
/// temporary directory and its ports free loopback ports, in its arguments, its environment and
/// the config files it mounts alike.
#[derive(Default)]
struct Mapping {
    paths: Vec<(String, PathBuf)>,
    ports: Vec<(u16, u16)>,
}

impl Mapping {
    fn apply(&self, s: &str) -> String {
        let mut out = s.to_string();
        let mut paths: Vec<_> = self.paths.iter().collect();
        paths.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        for (from, to) in paths {
            out = out.replace(from.as_str(), to.to_str().unwrap());
        }
        for (from, to) in &self.ports {
            for host in ["0.0.0.0", "127.0.0.1"] {
                out = out.replace(&format!("{host}:{from}"), &format!("127.0.0.1:{to}"));
            }
        }
        out
    }

    fn port(&self, container: u16) -> u16 {
        self.ports.iter().find(|(c, _)| *c == container).unwrap_or_else(|| panic!("port {container} is not declared")).1
    }
}

/// A container run as a process of the built binary.
struct Pod {
    child: Option<Child>,
    dir: tempfile::TempDir,
    map: Mapping,
}

impl Pod {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn spawn(dir: tempfile::TempDir, map: Mapping, args: &[String], env: &[(String, String)]) -> Pod {
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(BIN)
            .args(args.iter().map(|a| map.apply(a)))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.clone(), map.apply(v))))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Pod { child: Some(child), dir, map }
    }

    /// Runs a Kubernetes container of `objects`. `secrets` stands in for the Secrets the
    /// operator creates: environment for `envFrom`, files for volumes.
    fn from_manifest(objects: &[Value], deployment: &str, secrets: &HashMap<&str, Vec<(String, String)>>) -> Pod {
        let pod = &find(objects, "Deployment", deployment)["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let dir = tempfile::tempdir().unwrap();
        let mut map = Mapping::default();
        for p in c["ports"].as_array().unwrap() {
            map.ports.push((p["containerPort"].as_u64().unwrap() as u16, free_port()));
        }
        let volumes = pod["volumes"].as_array().unwrap();
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        for m in c["volumeMounts"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let vol = volumes.iter().find(|v| v["name"] == name).unwrap();
            let folder = dir.path().join(name);
            std::fs::create_dir_all(&folder).unwrap();
            let content: Vec<(String, String)> = if let Some(cm) = vol["configMap"]["name"].as_str() {
                find(objects, "ConfigMap", cm)["data"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
            } else if let Some(secret) = vol["secret"]["secretName"].as_str() {
                secrets.get(secret).unwrap_or_else(|| panic!("the test gives no Secret {secret}")).clone()
            } else {
                assert!(vol["emptyDir"].is_object() || vol["persistentVolumeClaim"].is_object(), "volume {name}: unknown kind");
                Vec::new()
            };
            for (file, text) in content {
                files.push((folder.join(file), text));
            }
            let target = match m["subPath"].as_str() {
                Some(sub) => folder.join(sub),
                None => folder,
            };
            map.paths.push((m["mountPath"].as_str().unwrap().to_string(), target));
        }
        for (path, text) in files {
            std::fs::write(path, map.apply(&text)).unwrap();
        }
        let mut env = Vec::new();
        for from in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(cm) = from["configMapRef"]["name"].as_str() {
                for (k, v) in find(objects, "ConfigMap", cm)["data"].as_object().unwrap() {
                    env.push((k.clone(), v.as_str().unwrap().to_string()));
                }
            } else if let Some(secret) = from["secretRef"]["name"].as_str() {
                env.extend(secrets.get(secret).unwrap_or_else(|| panic!("the test gives no Secret {secret}")).iter().cloned());
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            env.push((e["name"].as_str().unwrap().to_string(), e["value"].as_str().expect("env values are literal").to_string()));
        }
        env.push(("TAILRACE_LOG".into(), "info".into()));
        let args: Vec<String> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        Pod::spawn(dir, map, &args, &env)
    }

    /// Waits until a probe of the container answers 200, as the kubelet would ask it: over
    /// HTTPS (trusting `ca`) when the probe says so.
    fn wait_probe(&self, container: &Value, probe: &str, ca: Option<&Path>) {
        let get = &container[probe]["httpGet"];
        let port_name = get["port"].as_str().unwrap();
        let cport = container["ports"].as_array().unwrap().iter().find(|p| p["name"] == port_name).unwrap()["containerPort"].as_u64().unwrap();
        let port = self.map.port(cport as u16);
        let https = get["scheme"] == "HTTPS";
        let path = get["path"].as_str().unwrap();
        let mut health = Command::new(BIN);
        health.arg("health").args(["--server", &format!("{}://localhost:{port}", if https { "https" } else { "http" })]);
        match path {
            "/healthz" => {}
            "/readyz" => {
                health.arg("--ready");
            }
            other => panic!("probe path {other} is not one `tailrace health` checks"),
        }
        if let Some(ca) = ca {
            health.env("TAILRACE_CA_CERT", ca);
        }
        wait_until(&format!("{probe} {path} of {}", self.dir.path().display()), 60, || {
            let ok = health.output().unwrap().status.success();
            if !ok {
                assert!(self.child.is_some(), "not running");
            }
            ok
        });
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://localhost:{}", self.map.port(8520))
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!("--- pod log {}:\n{}", self.dir.path().display(), self.log());
        }
    }
}

/// The container from the Dockerfile's last stage: its ENV, CMD (after the ENTRYPOINT binary),
/// EXPOSEd ports and data VOLUME; returns the pod and the HEALTHCHECK command.
fn dockerfile_pod() -> (Pod, Vec<String>) {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let last_stage = joined.rsplit_once("\nFROM ").unwrap().1;
    let instr = |name: &str| -> Vec<String> {
        last_stage.lines().filter_map(|l| l.trim().strip_prefix(&format!("{name} "))).map(|s| s.trim().to_string()).collect()
    };
    let json_list = |s: &str| -> Vec<String> { serde_json::from_str(s).unwrap_or_else(|e| panic!("not a JSON list ({e}): {s}")) };
    let user = instr("USER").pop().expect("a USER");
    assert!(!user.starts_with('0') && !user.starts_with("root"), "the image must not run as root: USER {user}");
    let entrypoint = json_list(&instr("ENTRYPOINT").pop().expect("an ENTRYPOINT"));
    assert_eq!(entrypoint, ["/usr/local/bin/tailrace"], "the entrypoint is the binary");
    let cmd = json_list(&instr("CMD").pop().expect("a CMD"));
    let check = instr("HEALTHCHECK").pop().expect("a HEALTHCHECK");
    let check = json_list(check.split_once("CMD ").expect("HEALTHCHECK … CMD [..]").1);
    assert_eq!(check[0], entrypoint[0], "the health check runs the binary");
    let mut env = Vec::new();
    for line in instr("ENV") {
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
            env.push((k.to_string(), v.to_string()));
        }
    }
    let volume = json_list(&instr("VOLUME").pop().expect("a VOLUME"));
    let dir = tempfile::tempdir().unwrap();
    let mut map = Mapping::default();
    for v in volume {
        let folder = dir.path().join("volume");
        std::fs::create_dir_all(&folder).unwrap();
        map.paths.push((v, folder));
    }
    for port in instr("EXPOSE").join(" ").split_whitespace() {
        map.ports.push((port.split('/').next().unwrap().parse().unwrap(), free_port()));
    }
    // QUIC and HTTP share a port number on different protocols only in the manifests, never here.
    let health = check[1..].iter().map(|a| map.apply(a)).collect();
    (Pod::spawn(dir, map, &cmd, &env), health)
}

#[test]
fn the_dockerfile_command_serves_and_its_healthcheck_passes() {
    let (pod, health) = dockerfile_pod();
    wait_until("the HEALTHCHECK command to pass", 60, || Command::new(BIN).args(&health).output().unwrap().status.success());
    let ready = Command::new(BIN).args(&health).arg("--ready").output().unwrap();
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stderr));
    // The data volume holds everything the server writes: the root filesystem can be read-only.
    let data = &pod.map.paths[0].1;
    for made in ["admin-token", "meta.db", "signing-keys.json"] {
        assert!(data.join(made).exists(), "{made} is not on the data volume");
    }
    let log = pod.log();
    assert!(log.lines().any(|l| l.starts_with('{') && l.contains("tailrace serve ready")), "ENV asks for JSON logs: {log}");
}

#[test]
fn the_embedded_overlay_runs_as_rendered() {
    let objects = render("embedded");
    let pod = Pod::from_manifest(&objects, "tailrace", &HashMap::new());
    let container = &find(&objects, "Deployment", "tailrace")["spec"]["template"]["spec"]["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        pod.wait_probe(container, probe, None);
    }
    // A job through the pod's own ports: created, streamed over QUIC, read back.
    let data_dir = pod.map.paths.iter().find(|(m, _)| m == "/var/lib/tailrace").unwrap().1.clone();
    let admin = std::fs::read_to_string(data_dir.join("admin-token")).unwrap();
    let url = pod.url("http");
    let created = Command::new(BIN).args(["job", "create", "--project", "gh/acme/app", "--json", "--server", &url]).env("TAILRACE_TOKEN", admin.trim()).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let (job, token) = (created["job_id"].as_str().unwrap(), created["token"].as_str().unwrap());
    let run = agent(&url, token, job, "build", &["--quiet", "--transport", "quic"], &["printf", "from a pod\\n"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = http_get(&url.replace("localhost", "127.0.0.1"), &format!("/api/v1/jobs/{job}/steps/build/output"), Some(token), None).unwrap();
    assert_eq!(out.body, b"from a pod\n");
    // The archive folder and SQLite are on the persistent volume.
    assert!(data_dir.join("meta.db").exists() && data_dir.join("objects").is_dir());
}

/// Metric names (`tailrace_…`) in a dashboard or rule file.
fn named_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tailrace_") {
        let start = i + at;
        let end = start + text[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len() - start);
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Sample names in a Prometheus text exposition.
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| l.split(['{', ' ']).next().unwrap().to_string()).collect()
}

#[test]
fn the_scale_out_overlay_runs_as_rendered_and_dashboards_name_only_exported_metrics() {
    let _one_at_a_time = S3_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let objects = render("aws");
    let (redis, mongo, s3) = (RedisServer::start(), MongoServer::start(), S3Server::start());
    let ca = Ca::new();
    let (cert, key, _) = ca.leaf();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca.cert.pem()).unwrap();
    // The Secrets deploy/README.md tells operators to create: the backends (here with an
    // S3-compatible endpoint, as for MinIO), the shared signing keys, the TLS pair.
    let mut backends = s3.serve_env();
    backends.push(("TAILRACE_META_URL".into(), mongo.uri("tailrace")));
    backends.push(("TAILRACE_LIVE_URL".into(), redis.url()));
    let keys = tempfile::tempdir().unwrap();
    let made = Command::new(BIN).args(["keys", "rotate", "--data-dir"]).arg(keys.path()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let signing = std::fs::read_to_string(keys.path().join("signing-keys.json")).unwrap();
    let secrets: HashMap<&str, Vec<(String, String)>> = [
        ("tailrace-backends", backends),
        ("tailrace-signing-keys", vec![("signing-keys.json".into(), signing)]),
        ("tailrace-tls", vec![("tls.crt".into(), cert), ("tls.key".into(), key)]),
    ]
    .into();

    let query = Pod::from_manifest(&objects, "tailrace", &secrets);
    let ingest = Pod::from_manifest(&objects, "tailrace-ingest", &secrets);
    for (pod, name) in [(&query, "tailrace"), (&ingest, "tailrace-ingest")] {
        let container = &find(&objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0];
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            pod.wait_probe(container, probe, Some(ca_file.path()));
        }
    }

    // An agent streams to the ingest node over HTTPS; the query node serves and archives it.
    let admin = std::fs::read_to_string(query.map.paths.iter().find(|(m, _)| m == "/var/lib/tailrace").unwrap().1.join("admin-token")).unwrap();
    let query_url = query.url("http").replace("localhost", "127.0.0.1");
    let created = Command::new(BIN).args(["job", "create", "--project", "gh/acme/app", "--json", "--server", &query_url]).env("TAILRACE_TOKEN", admin.trim()).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let (job, token) = (created["job_id"].as_str().unwrap(), created["token"].as_str().unwrap());
    let data = awkward_bytes(71, 3 << 20);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("out"), &data).unwrap();
    let mut run = agent(&ingest.url("https"), token, job, "build", &["--quiet"], &["cat", tmp.path().join("out").to_str().unwrap()]);
    let run = run.env("TAILRACE_CA_CERT", ca_file.path()).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let archived = || {
        let r = http_get(&query_url, &format!("/api/v1/jobs/{job}/steps"), Some(token), None).unwrap();
        let steps: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        steps["items"].as_array().into_iter().flatten().any(|s| s["step"] == "build" && s["archived_at_ms"].is_u64())
    };
    wait_until("step archived to S3 by the query node", 120, archived);
    assert!(http_get(&query_url, &format!("/api/v1/jobs/{job}/steps/build/output"), Some(token), None).unwrap().body == data);

    // Every metric the dashboard and the alerts name is exported by these nodes.
    let mut have = exported(&String::from_utf8_lossy(&http_get(&query_url, "/metrics", None, None).unwrap().body));
    let (_, ingest_metrics) = https_exchange(ingest.map.port(8520), &ca.cert.pem(), Some("/metrics"));
    have.extend(exported(&ingest_metrics));
    assert!(have.contains("tailrace_live_redis_used_memory_bytes"), "the Redis gauges are missing: {have:?}");
    for file in ["deploy/monitoring/grafana-dashboard.json", "deploy/monitoring/alerts.yml", "deploy/monitoring/alerts.test.yml"] {
        let named = named_metrics(&std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap());
        assert!(named.len() >= 5, "{file} names only {named:?}");
        let missing: Vec<_> = named.difference(&have).collect();
        assert!(missing.is_empty(), "{file} names metrics /metrics does not export: {missing:?}");
    }
}
