//! Upgrades of files written by older builds, run when the store opens one: today, computing
//! the `vaults` table for a file written before vaults existed.

use std::collections::BTreeMap;

use redb::{ReadableTable, WriteTransaction};

use crate::api::{VaultMeta, vault_of};
use crate::storage::codec::decode_kv_entry_ref;
use crate::storage::error::{Error, Result};
use crate::storage::schema::*;

/// Computes every vault's metadata from a full scan of the keys and writes it (replacing the
/// `vaults` table): the upgrade of a file written before vaults existed. A vault's created and
/// updated revisions become the lowest create and highest mod revision of its keys. Returns
/// the number of vaults.
pub(crate) fn rebuild_vaults(txn: &WriteTransaction) -> Result<u64> {
    let mut vaults: BTreeMap<Vec<u8>, VaultMeta> = BTreeMap::new();
    {
        let kv = txn.open_table(KV)?;
        for item in kv.range::<&[u8]>(vault_prefix_range())? {
            let (key, bytes) = item?;
            let key = key.value();
            let Some(name) = vault_of(key) else {
                continue;
            };
            let entry = decode_kv_entry_ref(key, bytes.value())?;
            let meta = vaults.entry(name.to_vec()).or_insert(VaultMeta {
                created_revision: u64::MAX,
                ..VaultMeta::default()
            });
            meta.key_count += 1;
            meta.total_bytes += (key.len() + entry.value.len()) as u64;
            meta.created_revision = meta.created_revision.min(entry.create_revision);
            meta.updated_revision = meta.updated_revision.max(entry.mod_revision);
        }
    }
    txn.delete_table(VAULTS)?;
    let mut table = txn.open_table(VAULTS)?;
    for (name, meta) in &vaults {
        let bytes = postcard::to_allocvec(meta).map_err(|e| Error::corrupt("vault", e))?;
        table.insert(name.as_slice(), bytes.as_slice())?;
    }
    Ok(vaults.len() as u64)
}
/// The keys under `vault/`.
fn vault_prefix_range() -> std::ops::Range<&'static [u8]> {
    crate::api::VAULT_PREFIX..b"vault0"
}
