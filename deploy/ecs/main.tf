# byoc-runner on ECS Fargate: one service running `runner run`, its task definition, a least-privilege
# execution role, a log group and (optionally) an egress-only security group.
#
# The API token reaches the container only through ECS `secrets` (Secrets Manager or SSM), at task
# start: it is never a terraform variable, never in plain environment, never an output.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  state_dir    = "/var/lib/byoc-runner"
  health_url   = "http://127.0.0.1:${var.health_port}/healthz"
  token_is_ssm = can(regex("^arn:[^:]+:ssm:", var.api_token_secret_arn))
  # Secrets Manager JSON key syntax: <arn>:<json-key>:<version-stage>:<version-id>
  token_value_from = (var.api_token_secret_json_key == null || local.token_is_ssm
    ? var.api_token_secret_arn
    : "${var.api_token_secret_arn}:${var.api_token_secret_json_key}::"
  )
  security_group_ids = length(var.security_group_ids) > 0 ? var.security_group_ids : [aws_security_group.runner[0].id]

  # Plain settings only; every RUNNER_* name here is one `runner run` reads.
  base_environment = {
    RUNNER_ID              = var.runner_id
    RUNNER_API_URL         = var.api_url
    RUNNER_STATE_DIR       = local.state_dir
    RUNNER_HEALTH_ADDR     = "0.0.0.0:${var.health_port}"
    RUNNER_DRAIN_GRACE     = tostring(var.drain_grace)
    RUNNER_MAX_CONCURRENCY = tostring(var.max_concurrency)
    RUNNER_LOG_FORMAT      = "json"
    # The root filesystem is read-only: tools keep their caches under /tmp.
    HOME   = "/tmp"
    TMPDIR = "/tmp"
  }
  runner_environment = merge(
    local.base_environment,
    length(var.groups) > 0 ? { RUNNER_GROUPS = join(",", var.groups) } : {},
    length(var.concurrency) > 0 ? {
      RUNNER_CONCURRENCY = join(",", [for g in sort(keys(var.concurrency)) : "${g}=${var.concurrency[g]}"])
    } : {},
    var.log_level == null ? {} : { RUNNER_LOG_LEVEL = var.log_level },
    var.extra_environment,
  )

  container = {
    name      = "runner"
    image     = var.image
    essential = true
    command   = ["run"]
    user      = "10001:10001"

    environment = [for k in sort(keys(local.runner_environment)) : { name = k, value = local.runner_environment[k] }]
    secrets = [
      { name = "RUNNER_API_TOKEN", valueFrom = local.token_value_from },
    ]

    readonlyRootFilesystem = var.readonly_root_filesystem
    mountPoints = [
      { sourceVolume = "state", containerPath = local.state_dir, readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
    portMappings = [
      { name = "health", containerPort = var.health_port, protocol = "tcp" },
    ]

    # SIGTERM drains the runner: stop claiming, let running jobs finish within RUNNER_DRAIN_GRACE,
    # cancel the rest cleanly, flush logs, exit 0. ECS sends SIGKILL only stopTimeout seconds later.
    stopTimeout = var.stop_timeout
    # tini as PID 1 reaps the job processes (terraform, helm, git) the runner starts.
    linuxParameters = { initProcessEnabled = true }

    healthCheck = {
      command = ["CMD", "python3", "-c",
      "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('${local.health_url}', timeout=4).status == 200 else 1)"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.runner.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "runner"
      }
    }
  }
}

# --- logs -------------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "runner" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

# --- execution role: what ECS itself needs to start the task, nothing more -------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    # Only ECS acting for this account may assume it (confused-deputy guard).
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  description        = "ECS execution role of ${var.name}: pull the image, write logs, read the runner token."
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.runner.arn}:*"]
  }

  statement {
    sid       = "ReadRunnerToken"
    actions   = local.token_is_ssm ? ["ssm:GetParameters"] : ["secretsmanager:GetSecretValue"]
    resources = [var.api_token_secret_arn]
  }

  dynamic "statement" {
    for_each = var.secrets_kms_key_arn == null ? [] : [var.secrets_kms_key_arn]
    content {
      sid       = "DecryptRunnerToken"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values = [local.token_is_ssm
          ? "ssm.${data.aws_region.current.name}.amazonaws.com"
          : "secretsmanager.${data.aws_region.current.name}.amazonaws.com"
        ]
      }
    }
  }

  dynamic "statement" {
    for_each = var.image_ecr_repository_arn == null ? [] : [var.image_ecr_repository_arn]
    content {
      sid       = "PullRunnerImage"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    # GetAuthorizationToken has no resource-level permissions: AWS requires "*" for it alone.
    for_each = var.image_ecr_repository_arn == null ? [] : [1]
    content {
      sid       = "EcrLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "${var.name}-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- network ----------------------------------------------------------------------------------

resource "aws_security_group" "runner" {
  count       = length(var.security_group_ids) > 0 ? 0 : 1
  name        = "${var.name}-runner"
  description = "byoc-runner: outbound only (the runner polls its control plane; nothing connects to it)"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_egress_rule" "runner" {
  for_each          = length(var.security_group_ids) > 0 ? toset([]) : toset(var.egress_cidr_blocks)
  security_group_id = aws_security_group.runner[0].id
  description       = "runner outbound"
  ip_protocol       = "-1"
  cidr_ipv4         = each.value
  tags              = var.tags
}

# --- task and service -------------------------------------------------------------------------

resource "aws_ecs_task_definition" "runner" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = var.task_role_arn
  container_definitions    = jsonencode([local.container])

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Task storage (Fargate ephemeral storage); the image's VOLUME gives the state dir its owner.
  volume {
    name = "state"
  }
  volume {
    name = "tmp"
  }

  tags = var.tags
}

resource "aws_ecs_service" "runner" {
  name                   = var.name
  cluster                = var.cluster_arn
  task_definition        = aws_ecs_task_definition.runner.arn
  desired_count          = var.desired_count
  launch_type            = "FARGATE"
  platform_version       = var.platform_version
  enable_execute_command = var.enable_execute_command
  propagate_tags         = "SERVICE"

  # Stop the old task (it drains) before starting the new one: two tasks must never hold the same
  # runner id at once.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = local.security_group_ids
    assign_public_ip = var.assign_public_ip
  }

  tags = var.tags
}
