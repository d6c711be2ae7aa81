//! A charted instance's objects: its chart, from a repository its namespace may use, rendered
//! for its runtime (values with the instance's images and the runtime's `$(runtime.*)`
//! variables), read by every later step as if they were its manifests, so admission, the
//! fence and the applier see the rendered objects.

use std::borrow::Cow;
use std::time::Duration;

use qleetos_crds::{ChartStatus, Reason, WorkloadInstance};

use super::dereference::Plan;
use super::stop::{Hold, Stop};
use crate::chart::{Request, credentials_for};
use crate::context::{Context, Next};
use crate::controllers::namespace_of;
use crate::dependencies::{runtime_variables, services};
use crate::error::Error;

/// How soon an instance whose chart could not be fetched or rendered tries again (the
/// repository may come back; a fix to the chart or values notifies it at once).
const CHART_RETRY: Duration = Duration::from_secs(60);

/// The instance with its chart's objects as its manifests, and what was rendered; the
/// instance itself when it has no chart.
pub(super) async fn materialize<'a>(
    instance: &'a WorkloadInstance,
    ctx: &Context,
    plan: &Plan,
) -> Result<(Cow<'a, WorkloadInstance>, Option<ChartStatus>), Stop> {
    let Some(chart) = &instance.spec.chart else {
        return Ok((Cow::Borrowed(instance), None));
    };
    if let Err(violation) = plan.fence.check_chart_repository(&chart.repository) {
        let message = format!("nothing applied: {violation}");
        return Err(Hold::refused(Reason::TenancyViolation, message).into());
    }
    let charts = ctx.charts().map_err(not_rendered)?;
    let namespace = namespace_of(instance)?;
    let credentials = credentials_for(
        &ctx.client,
        &ctx.settings.system_namespace,
        chart,
        Some(&namespace),
    )
    .await
    .map_err(not_rendered)?;
    let mut values = chart.values_with_images(&instance.spec.images);
    runtime_variables(&plan.runtime).substitute_values(&mut values);
    let workload = services::workload_of(instance);
    let request = Request {
        chart,
        values,
        release: chart.release_name.as_deref().unwrap_or(&workload),
        namespace: &namespace,
        credentials,
    };
    let rendered = charts
        .render(&request, &plan.operator)
        .await
        .map_err(not_rendered)?;
    let mut materialized = instance.clone();
    materialized.spec.manifests = rendered.manifests;
    // The images went into the values; container-name overrides would be a second meaning.
    materialized.spec.images.clear();
    Ok((Cow::Owned(materialized), Some(rendered.status)))
}

/// A chart that cannot be fetched or rendered holds the pass with the chart's own message;
/// anything else (the runtime, the management API) is an error retried with backoff.
fn not_rendered(error: Error) -> Stop {
    match error {
        Error::ChartUnavailable { .. } | Error::ChartRender { .. } => {
            let mut hold = Hold::refused(error.reason(), format!("nothing applied: {error}"));
            hold.next = Next::After(CHART_RETRY);
            hold.into()
        }
        other => other.into(),
    }
}
