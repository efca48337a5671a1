//! Queries only the original API's semantics need (see [`crate::http`]'s `compat` module).
use crate::storage::{Storage, StorageError};

impl Storage {
    /// Marks read those of `ids` that are the user's notifications (the others are ignored,
    /// as the original service did) and returns their ids, ascending. A notification read
    /// before keeps its first `read_at`.
    pub async fn mark_found_read(
        &self,
        user_id: &str,
        ids: &[i64],
    ) -> Result<Vec<i64>, StorageError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "WITH marked AS ( \
               UPDATE notifications SET is_read = TRUE, read_at = COALESCE(read_at, now()) \
               WHERE user_id = $1 AND id = ANY($2) RETURNING id) \
             SELECT id FROM marked ORDER BY id",
        )
        .bind(user_id)
        .bind(ids)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}
