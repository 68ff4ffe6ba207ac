//! Test harness shared by the integration tests: a typed tiny training run ([`TestRun`]),
//! running the Python interop scripts and a real S3-compatible server (moto) on 127.0.0.1.
//!
//! Nothing here is mocked: the scripts use pyarrow and Hugging Face `datasets`, and the S3
//! server is a separate process speaking HTTP. Missing tools make tests fail with a message
//! saying what to install (`.ci/run` installs them), never skip silently.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod run;

pub use run::TestRun;

/// Reading the JSON the Python scripts print (panicking on the unexpected: these are tests).
pub mod json {
    use serde_json::Value;

    /// An array of strings.
    pub fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    /// An array of numbers.
    pub fn floats(v: &Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }
}

/// The Python interpreter (`MTM_PYTHON`, default `python3`).
pub fn python() -> Command {
    Command::new(std::env::var("MTM_PYTHON").unwrap_or_else(|_| "python3".into()))
}

/// Path of a script in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Runs a script from `tests/python/` and returns its standard output; panics with its
/// standard error when it fails.
pub fn run_python(name: &str, args: &[&str]) -> String {
    let output = python()
        .arg(script(name))
        .args(args)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); install Python 3 with pyarrow, numpy, datasets")
        });
    assert!(
        output.status.success(),
        "{name} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// A moto S3 server on 127.0.0.1, killed on drop.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl S3Server {
    /// Starts the server and creates `bucket`.
    pub fn start(bucket: &str) -> Self {
        let port = free_port();
        let child = python()
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start moto: install it with `pip install \"moto[server]\"`");
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server.create_bucket(bucket);
        server
    }

    /// Creates another bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let created = python()
            .args([
                "-c",
                "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
                 aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket=sys.argv[2])",
                &self.endpoint,
                bucket,
            ])
            .status()
            .expect("python3 with boto3");
        assert!(created.success(), "creating bucket {bucket} failed");
    }

    /// Copies a local folder to `bucket/prefix` (`s3_copy.py`, boto3), as objects anyone
    /// may read when `public` (the server refuses anonymous reads of the others).
    pub fn upload(&self, local: &Path, to: &str, public: bool) {
        let mut args = vec![self.endpoint.as_str(), "up", local.to_str().unwrap(), to];
        if public {
            args.push("public-read");
        }
        run_python("s3_copy.py", &args);
    }

    /// Copies `bucket/prefix` into a local folder.
    pub fn download(&self, from: &str, local: &Path) {
        run_python(
            "s3_copy.py",
            &[&self.endpoint, "down", from, local.to_str().unwrap()],
        );
    }

    /// A front door to this server where `public` buckets refuse signed requests and the
    /// others refuse unsigned ones (`public_bucket.py`), killed on drop.
    pub fn public_gate(&self, public: &[&str]) -> PublicGate {
        use std::io::BufRead;
        let mut child = python()
            .arg(script("public_bucket.py"))
            .args([self.endpoint.as_str(), &public.join(",")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs public_bucket.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("public_bucket.py prints its port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port: {line:?}"));
        PublicGate {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The AWS environment a client needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        s3_env(&self.endpoint)
    }
}

/// See [`S3Server::public_gate`].
pub struct PublicGate {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Drop for PublicGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The AWS environment for an S3 endpoint over plain HTTP, with dummy credentials.
pub fn s3_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file below `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a readable folder entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Every tensor of a safetensors file, by name, as its raw little-endian bytes.
pub fn safetensors_bytes(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect()
}

/// The pid of rank `rank` among the children of the `mpirun` with pid `mpirun` (Linux:
/// read from /proc, by the rank Open MPI puts in each child's environment).
pub fn mpirun_rank_pid(mpirun: u32, rank: usize) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{mpirun}/task/{mpirun}/children")).ok()?;
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == wanted.as_bytes()))
        })
}

/// The session ids of a local dataset folder (its `{eid}_aligned` folders), sorted.
pub fn local_eids(data: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(data)
        .unwrap_or_else(|e| panic!("{}: {e}", data.display()))
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix("_aligned")
                .map(str::to_string)
        })
        .collect();
    out.sort();
    out
}
