//! `tortiectl pool create | list | delete`.

use anyhow::{Context, Result, anyhow};
use tortie_ipam::{EncapsulationMode, IPPool, parse_pool_cidr};

use super::datastore::Datastore;
use super::table::Table;
use super::{Output, PoolCommand};

pub fn run(datastore: &Datastore, command: PoolCommand) -> Result<()> {
    match command {
        PoolCommand::Create {
            name,
            cidr,
            block_size,
            ipip_mode,
            vxlan_mode,
            nat_outgoing,
            disabled,
            node_selector,
        } => {
            let cidr = parse_pool_cidr(&name, &cidr)?;
            let mut pool = IPPool::new(name.clone(), cidr);
            if let Some(block_size) = block_size {
                pool.block_size = block_size;
            }
            pool.ipip_mode = ipip_mode
                .parse::<EncapsulationMode>()
                .map_err(|problem| anyhow!("pool {name}: --ipip-mode: {problem}"))?;
            pool.vxlan_mode = vxlan_mode
                .parse::<EncapsulationMode>()
                .map_err(|problem| anyhow!("pool {name}: --vxlan-mode: {problem}"))?;
            pool.nat_outgoing = nat_outgoing;
            pool.disabled = disabled;
            pool.node_selector = node_selector;
            // Validate before touching the datastore, so bad input never creates a file.
            tortie_ipam::validate_pool(&pool)?;
            let ipam = datastore.open_or_create()?;
            ipam.create_pool(pool)
                .with_context(|| format!("creating pool {name}"))?;
            println!("Successfully created 1 'IPPool' resource(s)");
            Ok(())
        }
        PoolCommand::List { output } => {
            let pools = datastore.open_existing()?.pools()?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&pools)?),
                Output::Table => {
                    let mut table = Table::new(&[
                        "NAME",
                        "CIDR",
                        "BLOCK SIZE",
                        "IPIP",
                        "VXLAN",
                        "NAT",
                        "DISABLED",
                        "SELECTOR",
                    ]);
                    for pool in &pools {
                        table.row(vec![
                            pool.name.clone(),
                            pool.cidr.to_string(),
                            pool.block_size.to_string(),
                            pool.ipip_mode.to_string(),
                            pool.vxlan_mode.to_string(),
                            pool.nat_outgoing.to_string(),
                            pool.disabled.to_string(),
                            pool.node_selector.clone(),
                        ]);
                    }
                    print!("{}", table.render());
                }
            }
            Ok(())
        }
        PoolCommand::Delete { name } => {
            datastore
                .open_existing()?
                .delete_pool(&name)
                .with_context(|| format!("deleting pool {name}"))?;
            println!("Successfully deleted 1 'IPPool' resource(s)");
            Ok(())
        }
    }
}
