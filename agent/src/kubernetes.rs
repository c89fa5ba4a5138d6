//! What tortie asks of the Kubernetes API.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};

/// How long one question to the API server may take before it counts as unreachable.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether this process can find a Kubernetes API at all: inside a pod (the service
/// environment kubelet injects) or through a kubeconfig.
fn api_reason_missing() -> Option<String> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let kubeconfig = std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("HOME")
            .is_some_and(|home| Path::new(&home).join(".kube/config").exists());
    if in_cluster || kubeconfig {
        None
    } else {
        Some(
            "not running in a Kubernetes cluster (KUBERNETES_SERVICE_HOST is not set and there \
             is no KUBECONFIG or ~/.kube/config); outside a cluster use another method, such \
             as can-reach= or cidr="
                .to_string(),
        )
    }
}

/// The InternalIP addresses of Node `node_name`, with a description of where they came from,
/// or why they could not be had.
pub async fn node_internal_ips(node_name: &str) -> Result<(String, Vec<IpAddr>), String> {
    if let Some(reason) = api_reason_missing() {
        return Err(reason);
    }
    let ask = async {
        let client = Client::try_default()
            .await
            .map_err(|e| format!("cannot configure a Kubernetes client: {e}"))?;
        let nodes: Api<Node> = Api::all(client);
        nodes
            .get(node_name)
            .await
            .map_err(|e| format!("cannot read Kubernetes Node \"{node_name}\": {e}"))
    };
    let node = tokio::time::timeout(API_TIMEOUT, ask).await.map_err(|_| {
        format!(
            "the Kubernetes API did not answer within {}s",
            API_TIMEOUT.as_secs()
        )
    })??;
    let addresses = node
        .status
        .and_then(|status| status.addresses)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    Ok((
        format!("InternalIP of Kubernetes Node \"{node_name}\""),
        addresses,
    ))
}
