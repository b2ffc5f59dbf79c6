// The Function App on Flex Consumption (Python 3.11) and its app settings: exactly the settings the code and the
// Functions host read (shared/settings.py SETTING_NAMES, host.json, the platform), no more — tests/test_infra.py
// compares the two sets. No setting carries a key: storage, Key Vault, telemetry and the task hub all use the identity.

@description('Name of the Function App.')
param name string

param location string = resourceGroup().location
param tags object = {}

@description('Resource id of the Flex Consumption (FC1) plan.')
param appServicePlanId string

@description('Host storage account (identity-based AzureWebJobsStorage).')
param storageAccountName string

@description('Blob container the Flex Consumption deployment package is read from.')
param deploymentStorageContainerName string

param applicationInsightsName string

@description('KEY_VAULT_URL: the vault holding input file ids.')
param keyVaultUri string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId).')
param identityClientId string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('AZURE_OPENAI_RESOURCES: JSON array of the Azure OpenAI resources whose deployments become jobs.')
param openAiResources string

param catalogTable string = 'jobs'
param deploymentSyncSchedule string = '0 */30 * * * *'
param taskHubName string

@description('STAGING_CONTAINER: blob container of the host storage account for staged inputs and results.')
param stagingContainer string = 'aoaibatch-staging'

@description('PRICES: the price table, JSON (per model, per million tokens, and the batch discount, for the table or per model); empty for none.')
param prices string = ''

@allowed([
  'AzureStorage'
  'DurableTaskScheduler'
])
param durableBackend string = 'AzureStorage'

@description('Endpoint of the Durable Task Scheduler (empty with the Azure Storage backend).')
param durableTaskSchedulerEndpoint string = ''

var pythonVersion = '3.11'
var storageSuffix = environment().suffixes.storage
var blobServiceUri = 'https://${storageAccountName}.blob.${storageSuffix}/'

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Settings common to both durable backends, by the name they are read under.
var appSettings = {
  // shared/settings.py
  AZURE_OPENAI_RESOURCES: openAiResources
  ARM_ENDPOINT: environment().resourceManager
  CATALOG_TABLE: catalogTable
  KEY_VAULT_URL: keyVaultUri
  // In Azure the vault's challenge must come from *.vault.azure.net (false is only for the local emulator).
  KEY_VAULT_VERIFY_CHALLENGE_RESOURCE: 'true'
  DEPLOYMENT_SYNC_SCHEDULE: deploymentSyncSchedule
  STAGING_CONTAINER: stagingContainer
  // Inputs are read from Azure Storage blob endpoints only; none besides (the setting names a local emulator's).
  INPUT_BLOB_ENDPOINTS: ''
  PRICES: prices
  // host.json: "hubName": "%DURABLE_TASK_HUB%"
  DURABLE_TASK_HUB: taskHubName
  // DefaultAzureCredential (shared/services.py) picks the user-assigned identity.
  AZURE_CLIENT_ID: identityClientId
  // Identity-based AzureWebJobsStorage: the host (blob), Durable Functions (queue, table), the job catalogue (table).
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: 'https://${storageAccountName}.blob.${storageSuffix}'
  AzureWebJobsStorage__queueServiceUri: 'https://${storageAccountName}.queue.${storageSuffix}'
  AzureWebJobsStorage__tableServiceUri: 'https://${storageAccountName}.table.${storageSuffix}'
  // Application Insights has local auth disabled: telemetry is sent with the identity's Entra token.
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

// The Durable Task Scheduler backend, selected by app settings alone: the host reads these as overrides of
// host.json's extensions.durableTask.storageProvider, so host.json stays the same for both backends.
var durableTaskSchedulerSettings = {
  AzureFunctionsJobHost__extensions__durableTask__storageProvider__type: 'azureManaged'
  AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName: 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING'
  DURABLE_TASK_SCHEDULER_CONNECTION_STRING: 'Endpoint=${durableTaskSchedulerEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}'
}

var allAppSettings = union(appSettings, durableBackend == 'DurableTaskScheduler' ? durableTaskSchedulerSettings : {})

module functionApp 'br/public:avm/res/web/site:0.19.3' = {
  name: 'function-app'
  params: {
    name: name
    location: location
    tags: union(tags, {
      'azd-service-name': 'api'
    })
    kind: 'functionapp,linux'
    serverFarmResourceId: appServicePlanId
    managedIdentities: {
      userAssignedResourceIds: [
        identityId
      ]
    }
    httpsOnly: true
    clientAffinityEnabled: false
    // azd deploys with an Entra token; basic-auth publishing (FTP, SCM) stays off.
    basicPublishingCredentialsPolicies: [
      {
        name: 'ftp'
        allow: false
      }
      {
        name: 'scm'
        allow: false
      }
    ]
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobServiceUri}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      alwaysOn: false
      minTlsVersion: '1.2'
    }
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: name
}

// All app settings as one resource once the site exists, the way the AVM module's own appsettings child does it;
// an object rather than siteConfig's name/value list, so the names above are the whole story.
resource siteAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads any sites/config as a whole App Service site; these of its checks do not apply here:
  // checkov:skip=CKV_AZURE_13: the API authenticates callers with function keys; App Service Authentication would need an Entra app registration the template cannot create
  // checkov:skip=CKV_AZURE_222: the HTTP API is what the app is for (function keys guard every route but /api/health); no private endpoint
  // checkov:skip=CKV_AZURE_63: App Service HTTP logs do not exist on Flex Consumption; requests are traced in Application Insights
  // checkov:skip=CKV_AZURE_65: detailed error pages are an App Service (IIS) feature; errors are traced in Application Insights
  // checkov:skip=CKV_AZURE_66: failed request tracing is an App Service (IIS) feature; failures are traced in Application Insights
  // checkov:skip=CKV_AZURE_80: a Python app, no .NET Framework
  // checkov:skip=CKV_AZURE_88: Flex Consumption keeps no Azure Files content share; the package is read from a blob container
  parent: site
  name: 'appsettings'
  properties: allAppSettings
  dependsOn: [
    functionApp
  ]
}

output name string = functionApp.outputs.name
output uri string = 'https://${functionApp.outputs.defaultHostname}'
