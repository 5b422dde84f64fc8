//! The clients: `concurrency` tasks on keep-alive connections, each picking operations from a
//! weighted mix for a fixed time (optionally at a fixed total rate), recording the latency of
//! every answer and sampling the end-to-end visibility of some commands.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::world::{self, Answer, PlacedOrder, World};

/// One kind of request the clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Adjust,
    /// A stock adjustment of the hot product (the first seeded), without `If-Match`.
    Hot,
    Place,
    Pay,
    Ship,
    Query,
}

impl Op {
    pub const ALL: [Op; 6] = [Op::Adjust, Op::Hot, Op::Place, Op::Pay, Op::Ship, Op::Query];

    pub fn name(self) -> &'static str {
        match self {
            Op::Adjust => "adjust",
            Op::Hot => "hot",
            Op::Place => "place",
            Op::Pay => "pay",
            Op::Ship => "ship",
            Op::Query => "query",
        }
    }

    pub fn is_command(self) -> bool {
        self != Op::Query
    }
}

/// Weights of the operations, e.g. `adjust=60,place=20,pay=5,ship=5,query=10`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    weights: Vec<(Op, u32)>,
    total: u32,
}

impl Mix {
    /// Only `op`.
    pub fn only(op: Op) -> Self {
        Self { weights: vec![(op, 1)], total: 1 }
    }

    fn pick(&self, r: u64) -> Op {
        let mut x = (r % u64::from(self.total)) as u32;
        for &(op, w) in &self.weights {
            if x < w {
                return op;
            }
            x -= w;
        }
        self.weights[0].0
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, w)) = part.split_once('=') else { bail!("mix entry {part:?} is not name=weight") };
            let Some(op) = Op::ALL.into_iter().find(|o| o.name() == name.trim()) else {
                bail!("unknown operation {name:?} (adjust, hot, place, pay, ship, query)")
            };
            let w: u32 = w.trim().parse()?;
            if w > 0 {
                weights.push((op, w));
            }
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            bail!("the mix has no operation with a positive weight");
        }
        Ok(Self { weights, total })
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.weights.iter().map(|(o, w)| format!("{}={w}", o.name())).collect();
        f.write_str(&parts.join(","))
    }
}

/// How one phase runs.
#[derive(Debug, Clone)]
pub struct PhaseSpec {
    pub mix: Mix,
    pub concurrency: usize,
    pub duration: Duration,
    /// Total requests per second across all clients; `None` runs flat out.
    pub rate: Option<f64>,
    /// Every n-th successful command of each client is followed to the query API.
    pub visibility_every: u64,
}

/// Raw results of a phase.
#[derive(Debug, Default)]
pub struct Raw {
    pub elapsed: Duration,
    /// Latencies in microseconds of successful requests, per operation actually sent.
    pub latencies: BTreeMap<Op, Vec<u64>>,
    /// Failed answers per operation and HTTP status (0: no answer).
    pub errors: BTreeMap<Op, BTreeMap<u16, u64>>,
    /// Pay or ship picks that found no order ready and sent an adjustment instead.
    pub fallbacks: u64,
    /// Command answer to query-API visibility, in microseconds.
    pub visibility: Vec<u64>,
    /// Samples that were not visible within the probe deadline.
    pub visibility_timeouts: u64,
}

/// How old a placed order must be before a client tries to pay it (the saga confirms it
/// asynchronously; a payment of a pending order is refused with 409 and retried later).
const PAY_AFTER: Duration = Duration::from_secs(1);
/// How old a paid order must be before clients query it (so the read model has it).
const QUERY_AFTER: Duration = Duration::from_secs(2);
/// Longest a visibility probe polls.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between two polls of a probe.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Probes running at once; a sample that finds none free is skipped, never queued.
const PROBES: usize = 4;

/// Runs one phase against `world`.
pub async fn run_phase(world: Arc<World>, spec: &PhaseSpec) -> Raw {
    let probes = Arc::new(Probes::default());
    let started = Instant::now();
    let deadline = started + spec.duration;
    let interval = spec.rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(spec.concurrency as f64 / r));
    let mut tasks = Vec::new();
    for c in 0..spec.concurrency {
        let (world, probes, mix, every) = (world.clone(), probes.clone(), spec.mix.clone(), spec.visibility_every);
        let spread = c as f64 / spec.concurrency as f64;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64);
            let mut raw = Raw::default();
            let mut successes = 0u64;
            // clients start spread over one interval so a rate-limited phase is smooth
            let mut next = Instant::now() + interval.map(|i| i.mul_f64(spread)).unwrap_or_default();
            while Instant::now() < deadline {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += i;
                    // a client that fell behind does not burst to catch up
                    let now = Instant::now();
                    if next + i < now {
                        next = now;
                    }
                }
                let op = mix.pick(rng.next());
                match execute(&world, op, &mut rng, &mut raw).await {
                    Ok((sent, answer, probe)) if answer.status.is_success() => {
                        raw.latencies.entry(sent).or_default().push(answer.elapsed.as_micros() as u64);
                        if sent.is_command() {
                            successes += 1;
                            if every > 0 && successes % every == 0 {
                                if let Some(p) = probe {
                                    probes.start(&world, p);
                                }
                            }
                        }
                    }
                    Ok((sent, answer, _)) => {
                        *raw.errors.entry(sent).or_default().entry(answer.status.as_u16()).or_default() += 1;
                    }
                    Err(_) => *raw.errors.entry(op).or_default().entry(0).or_default() += 1,
                }
            }
            raw
        }));
    }
    let mut out = Raw::default();
    for t in tasks {
        let Ok(raw) = t.await else { continue };
        for (op, l) in raw.latencies {
            out.latencies.entry(op).or_default().extend(l);
        }
        for (op, e) in raw.errors {
            for (status, n) in e {
                *out.errors.entry(op).or_default().entry(status).or_default() += n;
            }
        }
        out.fallbacks += raw.fallbacks;
    }
    out.elapsed = started.elapsed();
    // let running probes finish
    let _ =
        tokio::time::timeout(PROBE_DEADLINE + Duration::from_secs(2), probes.permits.acquire_many(PROBES as u32)).await;
    out.visibility = probes.lags.lock().map(|l| l.clone()).unwrap_or_default();
    out.visibility_timeouts = probes.timeouts.load(Ordering::SeqCst);
    out
}

/// A write to follow: the query API path showing it and the version it must reach.
struct Probe {
    path: String,
    admin: bool,
    version: i64,
    answered: Instant,
}

struct Probes {
    permits: Arc<Semaphore>,
    lags: Mutex<Vec<u64>>,
    timeouts: AtomicU64,
}

impl Default for Probes {
    fn default() -> Self {
        Self { permits: Arc::new(Semaphore::new(PROBES)), lags: Mutex::new(Vec::new()), timeouts: AtomicU64::new(0) }
    }
}

impl Probes {
    /// Polls the query API, without a consistency token, until the write is visible.
    fn start(self: &Arc<Self>, world: &Arc<World>, probe: Probe) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else { return };
        let (me, world) = (self.clone(), world.clone());
        tokio::spawn(async move {
            let token = probe.admin.then_some(world.admin_token.as_str());
            loop {
                if let Ok(a) = world::get(&world.endpoints, token, &probe.path).await {
                    if a.version().is_some_and(|v| v >= probe.version) {
                        let lag = probe.answered.elapsed().as_micros() as u64;
                        if let Ok(mut l) = me.lags.lock() {
                            l.push(lag);
                        }
                        break;
                    }
                }
                if probe.answered.elapsed() > PROBE_DEADLINE {
                    me.timeouts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            drop(permit);
        });
    }
}

/// Sends one operation; returns the operation actually sent (pay and ship fall back to an
/// adjustment when no order is ready), its answer and what would show it on the read side.
async fn execute(world: &World, op: Op, rng: &mut Rng, raw: &mut Raw) -> anyhow::Result<(Op, Answer, Option<Probe>)> {
    let e = &world.endpoints;
    match op {
        Op::Adjust | Op::Hot => {
            let p = if op == Op::Hot { &world.products[0] } else { &world.products[rng.below(world.products.len())] };
            let token = &world.merchants[p.merchant].token;
            let a = world::post(
                e,
                token,
                &format!("/v1/products/{}/stock", p.id),
                &json!({"delta": 1, "reason": "restock"}),
            )
            .await?;
            let probe = a.version().map(|version| Probe {
                path: format!("/v1/products/{}", p.id),
                admin: false,
                version,
                answered: Instant::now(),
            });
            Ok((op, a, probe))
        }
        Op::Place => {
            let ci = rng.below(world.customers.len());
            let mi = rng.below(world.merchants.len());
            let m = &world.merchants[mi];
            let first = rng.below(m.products.len());
            let mut picks = vec![m.products[first]];
            if m.products.len() > 1 && rng.below(2) == 0 {
                picks.push(m.products[(first + 1 + rng.below(m.products.len() - 1)) % m.products.len()]);
            }
            let mut total = 0;
            let mut lines = Vec::new();
            for p in picks {
                let quantity = 1 + rng.below(3) as i64;
                total += world.products[p].price * quantity;
                lines.push(json!({"product_id": world.products[p].id, "quantity": quantity}));
            }
            let id = Uuid::new_v4();
            let a =
                world::post(e, &world.customers[ci].token, "/v1/orders", &json!({"id": id, "lines": lines})).await?;
            if a.status.is_success() {
                let order = PlacedOrder { id, merchant: mi, customer: ci, total, at: Instant::now() };
                if let Ok(mut q) = world.placed.lock() {
                    q.push_back(order);
                }
                if let Ok(mut l) = world.placed_log.lock() {
                    l.push(id);
                }
            }
            let probe = a.version().map(|version| Probe {
                path: format!("/v1/orders/{id}"),
                admin: true,
                version,
                answered: Instant::now(),
            });
            Ok((Op::Place, a, probe))
        }
        Op::Pay => {
            let ready = world.placed.lock().ok().and_then(|mut q| {
                let ready = q.front().is_some_and(|o| o.at.elapsed() > PAY_AFTER);
                if ready {
                    q.pop_front()
                } else {
                    None
                }
            });
            let Some(order) = ready else { return fallback(world, rng, raw).await };
            let body = json!({"amount": {"amount_minor": order.total, "currency": "EUR"},
                              "payment_reference": format!("bench-{}", order.id.simple())});
            let token = &world.customers[order.customer].token;
            let a = world::post(e, token, &format!("/v1/orders/{}/payment", order.id), &body).await?;
            if a.status.is_success() {
                if let Ok(mut q) = world.paid.lock() {
                    q.push_back(order);
                }
                if let Ok(mut k) = world.known_orders.lock() {
                    if k.len() < 10_000 {
                        k.push((order.id, Instant::now()));
                    }
                }
            } else if a.status.as_u16() == 409 {
                // still pending: the saga has not confirmed it yet
                if let Ok(mut q) = world.placed.lock() {
                    q.push_back(PlacedOrder { at: Instant::now(), ..order });
                }
            }
            let probe = order_probe(order.id, &a);
            Ok((Op::Pay, a, probe))
        }
        Op::Ship => {
            let Some(order) = world.paid.lock().ok().and_then(|mut q| q.pop_front()) else {
                return fallback(world, rng, raw).await;
            };
            let body = json!({"carrier": "DHL", "tracking_number": format!("T{}", order.id.simple())});
            let token = &world.merchants[order.merchant].token;
            let a = world::post(e, token, &format!("/v1/orders/{}/shipment", order.id), &body).await?;
            let probe = order_probe(order.id, &a);
            Ok((Op::Ship, a, probe))
        }
        Op::Query => {
            let known = world.known_orders.lock().ok().and_then(|k| (!k.is_empty()).then(|| k[rng.below(k.len())]));
            let a = match known {
                Some((id, at)) if at.elapsed() > QUERY_AFTER && rng.below(2) == 0 => {
                    world::get(e, Some(&world.admin_token), &format!("/v1/orders/{id}")).await?
                }
                _ => {
                    let p = &world.products[rng.below(world.products.len())];
                    world::get(e, None, &format!("/v1/products/{}", p.id)).await?
                }
            };
            Ok((Op::Query, a, None))
        }
    }
}

async fn fallback(world: &World, rng: &mut Rng, raw: &mut Raw) -> anyhow::Result<(Op, Answer, Option<Probe>)> {
    raw.fallbacks += 1;
    Box::pin(execute(world, Op::Adjust, rng, raw)).await
}

fn order_probe(id: Uuid, a: &Answer) -> Option<Probe> {
    a.version().map(|version| Probe {
        path: format!("/v1/orders/{id}"),
        admin: true,
        version,
        answered: Instant::now(),
    })
}

/// xorshift64*: fast, seeded per client, good enough to spread load.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ u64::from(std::process::id()))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_its_weights_and_picks_every_operation_in_proportion() {
        let mix: Mix = "adjust=60,place=20,pay=5,ship=5,query=10".parse().unwrap();
        let mut counts = BTreeMap::new();
        for r in 0..100u64 {
            *counts.entry(mix.pick(r)).or_insert(0) += 1;
        }
        assert_eq!(counts[&Op::Adjust], 60);
        assert_eq!(counts[&Op::Place], 20);
        assert_eq!(counts[&Op::Query], 10);
        assert_eq!(mix.to_string(), "adjust=60,place=20,pay=5,ship=5,query=10");
    }

    #[test]
    fn a_mix_with_unknown_operations_or_no_weight_is_refused() {
        assert!("adjust=1,refund=2".parse::<Mix>().is_err());
        assert!("adjust=0".parse::<Mix>().is_err());
        assert!("adjust".parse::<Mix>().is_err());
    }
}
