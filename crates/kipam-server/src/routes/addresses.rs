//! `/v1/addresses/{ip}`: who holds an address now (or held it at `?at=`), and its
//! history of allocate / release / reclaim events.

use std::net::IpAddr;

use axum::extract::State;
use kipam_api::addresses::{AddressInfo, AddressQuery, AddressState, EventView, Holder};
use kipam_core::prefix::addr_to_u128;
use kipam_core::{AddrRange, AddrState, Ipam};

use crate::engine::{Event, EventKind};
use crate::error::{ApiError, ApiPath, ApiQuery};
use crate::state::AppState;

fn event_view(e: &Event) -> EventView {
    EventView {
        seq: e.seq,
        time: kipam_api::time::format(e.time),
        kind: match e.kind {
            EventKind::Allocate => "allocate",
            EventKind::Release => "release",
            EventKind::Lease => "lease",
            EventKind::LeaseRelease => "lease-release",
            EventKind::Reclaim => "reclaim",
        }
        .into(),
        pool: e.pool.clone(),
        address: e.address.map(|a| a.to_string()),
        prefix: e.prefix.map(|p| p.to_string()),
        handle: e.handle.clone(),
        node: e.node.clone(),
        attrs: e.attrs.clone(),
    }
}

/// The pool holding `addr`, its state, and the handle key holding it.
fn current(ipam: &Ipam, addr: IpAddr) -> (Option<String>, AddressState, Option<Holder>) {
    let Some(p) = ipam
        .pools()
        .find(|p| AddrRange::of_net(p.config().cidr).contains(addr))
    else {
        return (None, AddressState::Unmanaged, None);
    };
    let name = Some(p.config().name.clone());
    if p.leases().any(|l| l.prefix.contains(&addr)) {
        return (name, AddressState::Leased, None);
    }
    let block = p.block_of(addr);
    let Some(b) = p.block(block.base) else {
        let state = if p.reserved_reason(addr).is_some() {
            AddressState::Reserved
        } else {
            AddressState::Unclaimed
        };
        return (name, state, None);
    };
    let offset = u32::try_from(addr_to_u128(addr).wrapping_sub(block.base)).unwrap_or(u32::MAX);
    if offset >= b.size() {
        return (name, AddressState::Unclaimed, None);
    }
    match b.state(offset) {
        AddrState::Held(id) => {
            let key = ipam.key_of(id).to_string();
            let h = ipam.handle(&key);
            let holder = Holder {
                node: h.map(|h| h.node.to_string()),
                attrs: h.map(|h| h.attrs.clone()).unwrap_or_default(),
                since: h.map(|h| kipam_api::time::format(h.created)),
                handle: key,
            };
            (name, AddressState::Held, Some(holder))
        }
        AddrState::Free => (name, AddressState::Free, None),
        AddrState::Quarantined(_) => (name, AddressState::Quarantined, None),
        AddrState::Reserved => (name, AddressState::Reserved, None),
    }
}

/// The address's pool and state, its holder now (or at `at`), and its history.
#[utoipa::path(get, path = "/v1/addresses/{ip}", tag = "addresses",
    params(("ip" = String, Path, description = "An IPv4 or IPv6 address"), AddressQuery),
    responses((status = 200, body = AddressInfo)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(ip): ApiPath<String>,
    ApiQuery(q): ApiQuery<AddressQuery>,
) -> Result<axum::Json<AddressInfo>, ApiError> {
    let engine = state.engine()?;
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::invalid("ip", format!("{ip:?} is not an IPv4 or IPv6 address")))?;
    let at = match &q.at {
        Some(s) => {
            Some(kipam_api::time::parse(s).map_err(|e| ApiError::invalid("at", e.to_string()))?)
        }
        None => None,
    };
    let (pool, addr_state, now_holder) = engine.read(|i| current(i, addr));
    let history = engine.history(addr)?;
    let holder = match at {
        None => now_holder.map(|mut h| {
            // The allocate event is more precise than the handle's creation time.
            if let Some(e) = history
                .iter()
                .rev()
                .find(|e| e.kind == EventKind::Allocate && e.handle == h.handle)
            {
                h.since = Some(kipam_api::time::format(e.time));
            }
            h
        }),
        Some(t) => engine.holder_at(addr, t)?.map(|e| Holder {
            handle: e.handle.clone(),
            node: e.node.clone(),
            attrs: e.attrs.clone(),
            since: Some(kipam_api::time::format(e.time)),
        }),
    };
    Ok(axum::Json(AddressInfo {
        address: addr.to_string(),
        pool,
        state: addr_state,
        at: at.map(kipam_api::time::format),
        holder,
        history: history.iter().map(event_view).collect(),
    }))
}
