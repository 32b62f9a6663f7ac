-- Every embedding model whose vectors the daemons have written, one collection each. Exactly
-- one is 'serving' (search reads its vectors); a newly configured model is 'building' while its
-- own re-embed sessions run, then becomes 'serving' and the previous one 'retired'.
CREATE TABLE models (
    name       TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    dim        BIGINT  NOT NULL,
    weights    TEXT    NOT NULL,
    vocab      TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
-- Duplicates: the perceptual hash (64-bit dHash of the decoded image) beside the content hash.
ALTER TABLE image_assets ADD COLUMN dhash BIGINT;
CREATE INDEX image_assets_content_hash ON image_assets(content_hash);
