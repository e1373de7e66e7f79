//! Cluster tests over real iroh QUIC on loopback: in-process nodes (`util::Cluster`) for
//! replication, partitions, learners, security, client permissions and a graceful leader
//! shutdown; real
//! `aspen-node` processes (`util::NodeProcess`) for SIGKILL failover, durability, the CLI and
//! etcd's `etcdctl` against the etcd API.

mod auth;
mod cli;
mod compaction;
mod disk;
mod durability;
mod etcd;
mod etcd_admin;
mod etcd_client;
mod failover;
mod hashkv;
mod learner;
mod partition;
mod published;
mod replication;
mod security;
mod shutdown;
mod util;
mod watch;
