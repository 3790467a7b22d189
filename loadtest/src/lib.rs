//! `roost-loadtest`: Roost's fault suite and ticket sale. Each scenario starts a
//! throwaway Postgres cluster, three workers and the proxy on 127.0.0.1,
//! puts a mixed load of users with two devices each through the proxy,
//! injects one fault in the middle (kill -9, SIGSTOP, a store restart, a
//! rolling restart, a scale-out and back, a worker cut off from the store),
//! and then holds the final state — read from the store and once more
//! through the proxy — against a ledger of every request: no acknowledged
//! durable write lost, no stale read, no two owners of one entity at once;
//! plus unavailability windows, write-behind loss, movement on scale-out,
//! how a cut-off worker's users move and what it serves after the heal, and
//! a timeline plot.
//!
//! The binary `roost-faults` is a thin CLI over [`suite::run`]; the test
//! `tests/faults_short.rs` runs the short suite through the same call.
//!
//! The ticket sale ([`tickets`]: 100 tickets, thousands of users with two
//! devices each, one ticket per user; plain, kill -9 and rolling restart)
//! runs on the same machinery: the binary `roost-tickets` over
//! [`tickets::run`], the test `tests/tickets_short.rs`.
//!
//! | module | concept |
//! |---|---|
//! | [`scenario`] | the six faults and each run's plan |
//! | [`suite`], [`run`] | the scenarios in turn; one scenario end to end |
//! | `roost_testkit::fleet` | what runs: the workers and proxy (the store is `roost_testkit::Cluster`), child processes, the store relays a fault cuts |
//! | [`load`], [`client`] | simulated users and devices; one device's requests and retries |
//! | [`fault`], [`probe`] | injecting each fault; requests straight to one worker after it |
//! | [`ledger`] | the record of every request |
//! | [`stored`] | the final state in the store |
//! | [`check`] | every question asked of the ledger |
//! | [`report`], [`timeline`] | verdicts, the summary table, the SVG plot |
//! | [`cli`] | what both binaries do around a suite |
//! | [`fixed_reply`] | `roost-fixed-reply`: the bare hyper backend of `bench/proxy.sh`'s light layout |
//! | [`tickets`] | the ticket sale |

pub mod bystanders;
pub mod check;
pub mod cli;
pub mod client;
pub mod crash;
pub mod fault;
pub mod fixed_reply;
pub mod ledger;
pub mod load;
pub mod probe;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stored;
pub mod suite;
pub mod tickets;
pub mod timeline;
