//! The dashboard: apps with each environment's release, health and URL, the nodes, firing
//! alerts and recent events. The live part is one partial template that the page includes and
//! `/live/dashboard` serves alone, which the page's script fetches every few seconds.

use super::Signed;
use axum::response::Response;

/// Fills `ctx` with the dashboard's live data. A part the caller may not read (nodes for a
/// non-admin) is left out; a part that failed says so in one sentence.
async fn live_context(me: &Signed, ctx: &mut tera::Context) {
    let c = &me.client;
    let (apps, nodes, alerts, events) =
        tokio::join!(c.list_apps(), c.nodes(), c.alerts(), c.events(None, None, None, 15));
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
