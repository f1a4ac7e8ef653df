# Where function sources and images live.

resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:Holds only the content-hashed function zips that Terraform uploads; reads are by the build account alone and Data Access audit logs cover them, so a separate access-log bucket adds nothing.
  name                        = "${var.project_id}-sightops-sources"
  location                    = var.region
  force_destroy               = false
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

# Images that Cloud Functions builds from the zips (instead of the shared gcf-artifacts repo,
# so the build account's write access is limited to this one repository).
resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Images of our own open code, no data; Google-managed encryption. A CMEK key would make every function build depend on KMS.
  location      = var.region
  repository_id = "sightops-functions"
  format        = "DOCKER"
  description   = "Images built by Cloud Functions for the sight-ops functions."

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }

  depends_on = [google_project_service.api]
}

# Images CI builds (cloudbuild.yaml) and the deploy pipeline deploys by digest.
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Application images, no data at rest worth a customer-managed key; Google-managed encryption.
  location      = var.region
  repository_id = var.image_repository_id
  format        = "DOCKER"
  description   = "Container images pushed by CI and deployed by the release pipeline."

  docker_config {
    immutable_tags = true
  }

  depends_on = [google_project_service.api]
}

resource "google_artifact_registry_repository_iam_member" "ci_pushes_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.ci.member
}
