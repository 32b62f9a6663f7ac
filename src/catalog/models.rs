//! Embedding models and their states: which model's vectors search reads ('serving'), which one
//! is being re-embedded ('building'), which are no longer used ('retired').

use serde::Serialize;
use sqlx::Row;

use super::{Catalog, Result};
use crate::model::now_ms;

/// A model's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Serving,
    Building,
    Retired,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Serving => "serving",
            ModelState::Building => "building",
            ModelState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> ModelState {
        match s {
            "serving" => ModelState::Serving,
            "building" => ModelState::Building,
            _ => ModelState::Retired,
        }
    }
}

/// One model as recorded (enough to load it again for queries while another one builds).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelRow {
    pub name: String,
    /// The config's `model.name` (`efficientnet-lite0`, `ViT-B-32`, …).
    pub kind: String,
    pub dim: i64,
    pub weights: String,
    pub vocab: String,
    pub state: ModelState,
    pub updated_at: i64,
}

impl Catalog {
    pub async fn models(&self) -> Result<Vec<ModelRow>> {
        let rows =
            sqlx::query("SELECT name, kind, dim, weights, vocab, state, updated_at FROM models ORDER BY updated_at DESC, name").fetch_all(&self.read).await?;
        Ok(rows
            .iter()
            .map(|r| ModelRow {
                name: r.get("name"),
                kind: r.get("kind"),
                dim: r.get("dim"),
                weights: r.get("weights"),
                vocab: r.get("vocab"),
                state: ModelState::parse(r.get::<String, _>("state").as_str()),
                updated_at: r.get("updated_at"),
            })
            .collect())
    }

    pub async fn serving_model(&self) -> Result<Option<ModelRow>> {
        Ok(self.models().await?.into_iter().find(|m| m.state == ModelState::Serving))
    }

    /// Record the configured model. It serves at once when no model serves yet; otherwise it
    /// keeps its state (a model already serving stays serving) or starts building. Returns its
    /// state.
    pub async fn register_model(&self, m: &ModelRow) -> Result<ModelState> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let serving: Option<String> = sqlx::query("SELECT name FROM models WHERE state = 'serving'").fetch_optional(&mut *tx).await?.map(|r| r.get("name"));
        let state = match serving {
            None => ModelState::Serving,
            Some(ref s) if *s == m.name => ModelState::Serving,
            Some(_) => ModelState::Building,
        };
        sqlx::query(
            "INSERT INTO models (name, kind, dim, weights, vocab, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (name) DO UPDATE SET kind = $2, dim = $3, weights = $4, vocab = $5, state = $6, updated_at = $7",
        )
        .bind(&m.name)
        .bind(&m.kind)
        .bind(m.dim)
        .bind(&m.weights)
        .bind(&m.vocab)
        .bind(state.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(state)
    }

    /// `name` serves from now on; the model that served before is retired. One transaction.
    pub async fn promote_model(&self, name: &str) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let up = sqlx::query("UPDATE models SET state = 'serving', updated_at = $2 WHERE name = $1 AND state = 'building'")
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if up.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE models SET state = 'retired', updated_at = $2 WHERE name <> $1 AND state = 'serving'")
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
