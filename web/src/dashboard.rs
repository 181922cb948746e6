//! The dashboard: apps with each environment's release, health and URL, the nodes, firing
//! alerts and recent events. The live part is one partial template that the page includes and
//! `/live/dashboard` serves alone, which the page's script fetches every few seconds.

use super::Signed;
use axum::response::Response;

/// Fills `ctx` with the dashboard's live data. A part the caller may not read (nodes for a
/// non-admin) is left out; a part that failed says so in one sentence.
async fn live_context(me: &Signed, ctx: &mut tera::Context) {
    let c = &me.client;
    let (apps, nodes, alerts, events, figures) = tokio::join!(
        c.list_apps(),
        c.nodes(),
        c.alerts(),
        c.events(None, None, None, 15),
        c.node_metrics("10m")
    );
    if let Ok(view) = figures {
        ctx.insert("node_figures", &node_figures(&view));
    }
    let mut problems = Vec::new();
    match apps {
        Ok(apps) => ctx.insert("apps", &apps),
        Err(e) => problems.push(e.message),
    }
    // Nodes and alerts are the platform admin's; others simply do not see them.
    if let Ok(nodes) = nodes {
        ctx.insert("nodes", &nodes);
    }
    if let Ok(alerts) = alerts {
        let firing: Vec<_> = alerts.into_iter().filter(|a| a.state == "firing").collect();
        ctx.insert("alerts", &firing);
    }
    match events {
        Ok(mut events) => {
            events.reverse();
            ctx.insert("events", &events);
        }
        Err(e) => problems.push(e.message),
    }
    ctx.insert("problems", &problems);
}

pub(crate) async fn page(me: Signed) -> Response {
    let mut ctx = me.context("dashboard");
    live_context(&me, &mut ctx).await;
    ctx.insert("can_create", &me.platform_admin());
    me.page("dashboard.html", &ctx)
}

/// The live part alone, for the page's refresh.
pub(crate) async fn live(me: Signed) -> Response {
    let mut ctx = me.context("dashboard");
    live_context(&me, &mut ctx).await;
    me.page("dashboard_live.html", &ctx)
}

/// Each node's newest CPU, memory and (fullest) disk figures, formatted, by node name.
fn node_figures(
    view: &protocol::metrics::MetricsView,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut out: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for s in &view.series {
        let (Some(node), Some(value)) = (s.labels.get("node"), s.current()) else { continue };
        let key = match s.metric.as_str() {
            "node_cpu_percent" => "cpu",
            "node_memory_percent" => "memory",
            "node_disk_percent" => "disk",
            _ => continue,
        };
        let entry = out.entry(node.clone()).or_insert_with(|| serde_json::json!({}));
        // Several file systems: the fullest one is the one to watch.
        if entry[key].as_f64().is_none_or(|old| value > old) {
            entry[key] = value.into();
        }
    }
    for entry in out.values_mut() {
        for key in ["cpu", "memory", "disk"] {
            entry[key] =
                entry[key].as_f64().map_or("–".into(), |v| super::chart::format_value(v, "percent")).into();
        }
    }
    out
}
