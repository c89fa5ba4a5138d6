//! `tortiectl ipam show | check | release | assign`.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use tortie_ipam::{AssignIpArgs, AutoAssignArgs, CheckReport, Ipam, SqliteStore, Utilization};

use super::datastore::Datastore;
use super::table::Table;
use super::{IpamCommand, Output, percent};

pub fn run(datastore: &Datastore, command: IpamCommand) -> Result<u8> {
    match command {
        IpamCommand::Show {
            show_blocks,
            show_borrowed,
            ip,
            output,
        } => {
            let ipam = datastore.open_existing()?;
            match ip {
                Some(address) => show_address(&ipam, address, output)?,
                None if show_borrowed => show_borrowed_addresses(&ipam.utilization()?, output)?,
                None => show_usage(&ipam.utilization()?, show_blocks, output)?,
            }
            Ok(0)
        }
        IpamCommand::Check { output } => check(&datastore.open_existing()?, output.as_deref()),
        IpamCommand::Release {
            ip,
            handle,
            from_report,
        } => {
            let ipam = datastore.open_existing()?;
            if let Some(address) = ip {
                let released = ipam
                    .release_address(address, None, None)
                    .with_context(|| format!("releasing {address}"))?;
                println!(
                    "Successfully released {address} (handle {})",
                    released.handle_id.as_deref().unwrap_or("(none)")
                );
            } else if let Some(handle) = handle {
                let released = ipam
                    .release_handle(&handle)
                    .with_context(|| format!("releasing handle {handle}"))?;
                if released.is_empty() {
                    println!("Handle {handle} holds no address; nothing to release");
                }
                for address in released {
                    println!("Successfully released {address} (handle {handle})");
                }
            } else if let Some(path) = from_report {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the report {}", path.display()))?;
                let report: CheckReport = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{} is not a report written by `tortiectl ipam check -o <file>`",
                        path.display()
                    )
                })?;
                let outcome = ipam.release_from_report(&report)?;
                for address in &outcome.released {
                    println!("Successfully released {address}");
                }
                for handle in &outcome.repaired_handles {
                    println!("Recounted handle {handle}");
                }
                for skipped in &outcome.skipped {
                    println!("Skipped: {skipped}");
                }
            }
            Ok(0)
        }
        IpamCommand::Assign {
            node,
            handle,
            ip,
            num4,
            num6,
        } => {
            let ipam = datastore.open_or_create()?;
            if let Some(address) = ip {
                let args = AssignIpArgs {
                    address,
                    handle_id: handle.clone(),
                    node: node.clone(),
                    attributes: Default::default(),
                };
                let allocation = ipam
                    .assign_ip(&args)
                    .with_context(|| format!("assigning {address} to {handle}"))?;
                println!("{}", allocation.address);
            } else {
                let args = AutoAssignArgs {
                    num4: num4.unwrap_or(if num6.is_some() { 0 } else { 1 }),
                    num6: num6.unwrap_or(0),
                    ..AutoAssignArgs::new(handle.as_str(), node.as_str())
                };
                if args.num4 == 0 && args.num6 == 0 {
                    bail!("--num4 and --num6 are both 0: nothing to assign");
                }
                let assigned = ipam.auto_assign(&args).with_context(|| {
                    format!("assigning addresses to handle {handle} on node {node}")
                })?;
                for allocation in assigned.ipv4.iter().chain(&assigned.ipv6) {
                    println!("{}", allocation.address);
                }
            }
            Ok(0)
        }
    }
}

fn show_usage(usage: &Utilization, show_blocks: bool, output: Output) -> Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(usage)?);
        return Ok(());
    }
    let mut table = Table::new(&["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"]);
    let counts = |total: u128, in_use: u128, free: u128| {
        vec![
            total.to_string(),
            format!("{in_use} ({})", percent(in_use, total)),
            format!("{free} ({})", percent(free, total)),
        ]
    };
    for pool in &usage.pools {
        let mut row = vec!["IP Pool".to_string(), pool.cidr.to_string()];
        row.extend(counts(pool.total, pool.in_use, pool.free));
        table.row(row);
        if show_blocks {
            for block in &pool.blocks {
                let mut row = vec!["Block".to_string(), block.cidr.to_string()];
                row.extend(counts(
                    block.total.into(),
                    block.in_use.into(),
                    block.free.into(),
                ));
                table.row(row);
            }
        }
    }
    for block in &usage.blocks_outside_pools {
        let mut row = vec!["Block (no pool)".to_string(), block.cidr.to_string()];
        row.extend(counts(
            block.total.into(),
            block.in_use.into(),
            block.free.into(),
        ));
        table.row(row);
    }
    print!("{}", table.render());
    Ok(())
}

fn show_borrowed_addresses(usage: &Utilization, output: Output) -> Result<()> {
    let mut rows = Vec::new();
    for block in usage
        .pools
        .iter()
        .flat_map(|pool| &pool.blocks)
        .chain(&usage.blocks_outside_pools)
    {
        for borrowed in &block.borrowed {
            rows.push((borrowed, block));
        }
    }
    if output == Output::Json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(borrowed, block)| {
                serde_json::json!({
                    "address": borrowed.address,
                    "borrowingNode": borrowed.node,
                    "block": block.cidr,
                    "blockOwner": block.node,
                    "handleID": borrowed.handle_id,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let mut table = Table::new(&["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "HANDLE"]);
    for (borrowed, block) in rows {
        table.row(vec![
            borrowed.address.to_string(),
            borrowed.node.clone().unwrap_or_default(),
            block.cidr.to_string(),
            block.node.clone().unwrap_or_default(),
            borrowed.handle_id.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

fn show_address(ipam: &Ipam<SqliteStore>, address: IpAddr, output: Output) -> Result<()> {
    let info = ipam.address_info(address)?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    match (&info.pool, info.allocated) {
        (None, false) => println!("IP {address} is not in any pool"),
        (Some(pool), false) => println!("IP {address} is not assigned (pool {pool})"),
        (_, true) => {
            println!("IP {address} is in use");
            println!("Handle: {}", info.handle_id.as_deref().unwrap_or("(none)"));
            if let Some(block) = info.block {
                println!(
                    "Block: {block} (owner {})",
                    info.block_node.as_deref().unwrap_or("(none)")
                );
            }
            if let Some(sequence) = info.sequence {
                println!("Sequence number: {sequence}");
            }
            if !info.attributes.is_empty() {
                println!("Attributes:");
                for (key, value) in &info.attributes {
                    println!("  {key}: {value}");
                }
            }
        }
    }
    Ok(())
}

fn check(ipam: &Ipam<SqliteStore>, output: Option<&str>) -> Result<u8> {
    let report = ipam.check()?;
    match output {
        Some("json") => println!("{}", serde_json::to_string_pretty(&report)?),
        Some(path) => {
            let text = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing the report to {path}"))?;
            print_summary(&report);
            println!("Report written to {path}");
        }
        None => print_summary(&report),
    }
    if report.is_clean() {
        Ok(0)
    } else {
        eprintln!("tortiectl: {} problem(s) found", report.problems.len());
        Ok(1)
    }
}

fn print_summary(report: &CheckReport) {
    println!(
        "Checked {} pools, {} blocks, {} affinities, {} handles, {} allocations",
        report.pools, report.blocks, report.affinities, report.handles, report.allocations
    );
    if report.is_clean() {
        println!("No problems found");
        return;
    }
    println!("Found {} problem(s):", report.problems.len());
    for problem in &report.problems {
        println!(
            "  {}",
            serde_json::to_string(problem).unwrap_or_else(|_| format!("{problem:?}"))
        );
    }
}
