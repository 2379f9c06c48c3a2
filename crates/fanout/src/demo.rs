//! `fanout demo`: the embedded default. Mock services and a gateway on
//! loopback, configured by `examples/demo-mock.yaml` and `examples/demo.yaml`
//! (embedded), replaying the scenarios fanout exists for, until Ctrl-C.

use std::{future::Future, io::ErrorKind, net::SocketAddr, path::Path};

use anyhow::{Context, Result};
use fanout_gateway::{Gateway, Plan, config::Format};
use fanout_mock::{Mock, MockConfig};
use tokio::{net::TcpListener, sync::watch};

const GATEWAY_CONFIG: &str = include_str!("../../../examples/demo.yaml");
const MOCK_CONFIG: &str = include_str!("../../../examples/demo-mock.yaml");

/// The port a newcomer expects; taken ports fall back to a free one.
const PREFERRED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

pub(crate) async fn run(
    listen: Option<SocketAddr>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut mock_config = MockConfig::parse(MOCK_CONFIG)
        .map_err(|p| anyhow::anyhow!("examples/demo-mock.yaml:{p}"))?;
    // A test CA of the demo's own, made now, for the service behind TLS.
    let certs = std::env::temp_dir().join(format!("fanout-demo-{}", std::process::id()));
    let made = fanout_mock::certs::make(&certs)?;
    let _remove = RemoveOnDrop(certs);
    if let Some(tls) = mock_config.tls.as_mut() {
        tls.cert = made.server_cert.clone();
        tls.key = made.server_key.clone();
    }
    let mock = Mock::new(&mock_config, Path::new("."))?;
    let (_, tls_mock) = Mock::new_tls(&mock_config, Path::new("."))?
        .context("examples/demo-mock.yaml has a `tls` block")?;
    let bind_mock = || async {
        TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a port on 127.0.0.1 for the mock services")
    };
    let (mock_listener, replica_listener, tls_listener) =
        (bind_mock().await?, bind_mock().await?, bind_mock().await?);
    let mock_url = format!("http://{}", mock_listener.local_addr()?);
    let replica_url = format!("http://{}", replica_listener.local_addr()?);
    // Dialled by address, verified as `localhost` (examples/demo.yaml's
    // `tls.server_name`): `localhost` may resolve to ::1 as well.
    let tls_url = format!("https://{}", tls_listener.local_addr()?);
    let ca = made.ca.display().to_string();

    let (listener, note) = match listen {
        Some(addr) => (
            TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr}: pick another address with --listen")
            })?,
            None,
        ),
        None => match TcpListener::bind(PREFERRED).await {
            Ok(listener) => (listener, None),
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let port = listener.local_addr()?.port();
                (
                    listener,
                    Some(format!(
                        "port 8080 is taken, so the gateway uses port {port}"
                    )),
                )
            }
            Err(e) => return Err(e).context("cannot listen on 127.0.0.1:8080"),
        },
    };
    let addr = listener.local_addr()?;
    // The admin listener (dashboard): 9090 if free, else any free port.
    let admin = match TcpListener::bind((addr.ip(), 9090)).await {
        Ok(admin) => admin,
        Err(_) => TcpListener::bind((addr.ip(), 0)).await?,
    };
    let admin_addr = admin.local_addr()?;
    let plan = Plan::parse(
        GATEWAY_CONFIG,
        Format::Yaml,
        "examples/demo.yaml",
        |name| match name {
            "MOCK" => Some(mock_url.clone()),
            "MOCK_B" => Some(replica_url.clone()),
            "MOCK_TLS" => Some(tls_url.clone()),
            "DEMO_CA" => Some(ca.clone()),
            "LISTEN" => Some(addr.to_string()),
            "ADMIN" => Some(admin_addr.to_string()),
            _ => None,
        },
    )?;

    print!(
        "{}",
        banner(
            &format!("http://{addr}"),
            &mock_url,
            &format!("http://{admin_addr}"),
            note.as_deref()
        )
    );
    let gateway = Gateway::new(plan);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (mock_done, replica_done, tls_done, gateway_done, admin_done, ()) = tokio::join!(
        mock.clone()
            .serve(mock_listener, until_stopped(stopped.clone())),
        mock.serve(replica_listener, until_stopped(stopped.clone())),
        tls_mock.serve(tls_listener, until_stopped(stopped.clone())),
        fanout_gateway::serve(listener, gateway.clone(), until_stopped(stopped.clone())),
        fanout_gateway::serve_admin(admin, gateway, metrics, until_stopped(stopped)),
        async {
            shutdown.await;
            println!("\nstopping: finishing requests in flight");
            let _ = stop.send(true);
        }
    );
    mock_done?;
    replica_done?;
    tls_done?;
    gateway_done?;
    admin_done?;
    Ok(())
}

/// Removes the demo's certificates when it ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn banner(gateway: &str, mocks: &str, dashboard: &str, note: Option<&str>) -> String {
    let mut out = String::from("fanout demo\n");
    out += &format!("  gateway    {gateway}   (config: examples/demo.yaml)\n");
    out += &format!(
        "  dashboard  {dashboard}/   (live waterfall; also /metrics, /config, /healthz)\n"
    );
    out += &format!(
        "  mocks      {mocks}   (config: examples/demo-mock.yaml; a second replica and HTTPS beside it)\n"
    );
    if let Some(note) = note {
        out += &format!("  note     {note}\n");
    }
    out += &format!(
        r#"
Try these (-i shows the status and the x-fanout-complete header):

  merge three interfaces into one map: about the slowest call (300 ms), not the sum (600 ms)
    curl -i {gateway}/merged

  scatter-gather a user: the name service (over HTTPS and HTTP/2) and ~1 s loyalty points, together
    curl -i {gateway}/users/ada@example.com

  the same with a 500 ms deadline: the name only, complete: false, the loyalty call cancelled
    curl -i {gateway}/users/ada@example.com/fast

  fail fast: the payment fails at 50 ms, the 2 s inventory call is cancelled: a 502 at once
    curl -i {gateway}/checkout

  a write: the order is forwarded to payment as it came, then an audit event is built from it and the charge
    curl -i -X POST {gateway}/checkout -H 'content-type: application/json' -d '{{"user":"ada","amount":42.5,"items":[{{"sku":"tea","qty":2}}]}}'

  a pass-through: the body streams to the audit service, its answer (status, headers, body) streams back
    curl -i -X POST {gateway}/audit -d 'hello'

  many URLs at once, each with its own timeout, and a table of what came back
    fanout fetch --timeout 700ms {gateway}/merged {gateway}/users/ada@example.com {gateway}/users/ada@example.com/fast {gateway}/checkout

  what the mock services saw (calls, concurrency, calls cancelled by the gateway)
    curl {mocks}/__mock/stats

Ctrl-C stops the demo.
"#
    );
    out
}
