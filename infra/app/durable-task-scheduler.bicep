// The Durable Task Scheduler backend (durableBackend = 'DurableTaskScheduler'): a scheduler on the Consumption SKU
// (billed per orchestration action, nothing while idle) and the app's one task hub. Declared directly rather than
// with avm/res/durable-task/scheduler, whose parameters could not be checked offline against a pinned version.

@description('Name of the scheduler (3-64 letters, digits and hyphens).')
param name string

@description('Name of the task hub; the app finds it through DURABLE_TASK_HUB.')
param taskHubName string

param location string = resourceGroup().location
param tags object = {}

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'Consumption'
    }
    // An empty list denies every caller. Flex Consumption has no fixed outbound addresses, so the network is open
    // and access rests on Entra: only principals holding Durable Task Data Contributor reach the task hub.
    ipAllowlist: [
      '0.0.0.0/0'
    ]
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = {
  parent: scheduler
  name: taskHubName
  properties: {}
}

output name string = scheduler.name
output endpoint string = scheduler.properties.endpoint
output taskHubName string = taskHub.name
