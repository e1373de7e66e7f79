//! etcd's messages and service traits, generated from `proto/etcd/` by
//! `scripts/etcd-proto.sh` (protox and tonic-prost-build: no protoc needed). Not edited by
//! hand.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod authpb;

pub mod mvccpb;

pub mod etcdserverpb;
