# The module `runner local --demo` plans and applies through the runner: no provider to
# download, state kept by the embedded control plane through terraform's HTTP backend.
variable "greeting" {
  type    = string
  default = "hello"
}

resource "terraform_data" "greeting" {
  input = var.greeting
}

output "greeting" {
  value = terraform_data.greeting.output
}
