//! The anvil stand-in is a real Ethereum dev chain: started as a plain process (as a
//! `StandIn` would start it) on a loopback address, it answers JSON-RPC under a cluster
//! host name and mines a block every second.

use std::path::PathBuf;
use std::time::Duration;

use qleetos_e2e::cluster::free_loopback_address;
use qleetos_e2e::jsonrpc;
use qleetos_e2e::process::{self, ProcessSpec};
use qleetos_e2e::standin::{ANVIL_CHAIN_ID, StandInSpec, StandInTarget};

/// anvil starts in well under a second; generous for a loaded machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn anvil_answers_chain_id_and_mines_blocks() {
    // The conventional RPC port, on an address of its own as a Service's pod would have.
    let address = free_loopback_address(8545).expect("a loopback address with port 8545 free");
    let spec = StandInSpec::anvil("shop", "rpc-mainnet", address)
        .await
        .unwrap_or_else(|e| panic!("anvil is not available: {e}"));
    let logs = tempfile::tempdir().expect("a temporary directory");
    let target = StandInTarget {
        kubeconfig: PathBuf::from("/nonexistent/kubeconfig"),
        namespace: spec.namespace.clone(),
    };
    let log_path = logs.path().join(format!("{}.log", spec.component));
    let mut child = process::spawn(ProcessSpec {
        component: spec.component.clone(),
        program: spec.program.clone(),
        args: (spec.args)(&target).expect("anvil's arguments"),
        env: Vec::new(),
        log_path: log_path.clone(),
    })
    .await
    .expect("anvil starts");

    // How a test reaches the Service: its cluster name, resolved to the pod's address.
    let url = "http://rpc-mainnet.shop.svc:8545";
    let first = match jsonrpc::wait_block_number(url, Some(address), STARTUP_TIMEOUT).await {
        Ok(number) => number,
        Err(e) => panic!(
            "anvil on {address} does not answer: {e}; its log:\n{}",
            process::log_tail(&log_path)
        ),
    };
    let chain_id = jsonrpc::chain_id(url, Some(address))
        .await
        .expect("eth_chainId");
    assert_eq!(chain_id, ANVIL_CHAIN_ID);
    assert_eq!(ANVIL_CHAIN_ID, 31337);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The same node without the name mapping.
    let later = jsonrpc::block_number(&format!("http://{address}"), None)
        .await
        .expect("eth_blockNumber");
    assert!(
        later > first,
        "no block mined in 2.5 s with --block-time 1: {first} then {later}"
    );
    child.check_running().expect("anvil still runs");
    child.stop().await;
}
